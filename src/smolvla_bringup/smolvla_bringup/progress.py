"""What `smolvla-run` prints while a graph runs: state changes of the policy, the executor and the arm in
plain words, and one compact line every few seconds while the arm executes chunks. ROS-free: fed with the
status messages (PolicyStatus, ExecutorStatus, ArmStatus) and a monotonic ``now``; returns lines to print.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from smolvla_bringup import status_text as st
from smolvla_common.timeutil import seconds

IDLE_AFTER_S = 2.0  # no executed step for this long: the executor counts as idle
REFUSAL_EVERY_S = 10.0  # at most one "observation refused" line this often


def _keep(_node: str, text: str) -> str:
    return text


class Progress:
    """Turns status messages into progress lines; ``fatal`` is set when the policy cannot start (ERROR).

    ``hint(node, text)`` rewrites a node's message for the reader (the runner puts its own flags in).
    """

    def __init__(self, period_s: float = 5.0, hint: Callable[[str, str], str] = _keep) -> None:
        self.period_s = period_s
        self.hint = hint
        self.fatal: str | None = None
        self._policy: Any = None
        self._loaded = False
        self._refused_at = -float("inf")
        self._last_chunk_at: float | None = None
        self._executor: Any = None
        self._steps_at = 0.0  # when executed_steps last grew
        self._executing = False
        self._executed_any = False
        self._periodic_at = 0.0
        self._arm_key: tuple | None = None

    # ------------------------------------------------------------------------------------------- policy
    def on_policy(self, msg: Any, now: float) -> list[str]:
        previous, self._policy = self._policy, msg
        lines = []
        if msg.state == st.POLICY_ERROR:
            if previous is None or previous.state != st.POLICY_ERROR:
                self.fatal = self.hint("policy", msg.message)
                lines.append(f"policy: ERROR: {self.fatal}")
            return lines
        if previous is None and msg.state == st.POLICY_LOADING:
            lines.append(st.describe_policy(msg))
        if not self._loaded and msg.state in (st.POLICY_READY, st.POLICY_INFERRING):
            self._loaded = True
            lines.append(f"policy: model loaded on {msg.device} ({msg.message})")
        if msg.task and (previous is None or msg.task != previous.task):
            heard = "task" if previous is None else "instruction received:"
            lines.append(f"policy: {heard} '{msg.task}'")
        if previous is not None and msg.chunks_published > previous.chunks_published:
            if not previous.chunks_published:
                latency = seconds(msg.last_inference_latency)
                lines.append(f"policy: first chunk published (inference {latency:.2f} s)")
            self._last_chunk_at = now
        if msg.message.startswith("observation refused") and now - self._refused_at >= REFUSAL_EVERY_S:
            self._refused_at = now
            lines.append(f"policy: {self.hint('policy', msg.message)}")
        return lines

    # ----------------------------------------------------------------------------------------- executor
    def on_executor(self, msg: Any, now: float) -> list[str]:
        previous, self._executor = self._executor, msg
        lines = []
        if previous is None or self._phase(msg) != self._phase(previous):
            lines.append(st.describe_executor(msg))
            self._executing = False
        if previous is not None and msg.executed_steps > previous.executed_steps:
            self._steps_at = now
            if not self._executing:
                self._executing = True
                self._periodic_at = now
                what = "executing chunks" if self._executed_any else "executing the first chunk"
                lines.append(f"executor: {what} ({msg.chunks_received} received)")
                self._executed_any = True
        elif self._executing and now - self._steps_at >= IDLE_AFTER_S:
            self._executing = False
            lines.append(f"executor: idle, holding ({msg.message}); idle ticks {msg.idle_ticks}")
        if self._executing and now - self._periodic_at >= self.period_s:
            self._periodic_at = now
            lines.append(self._periodic_line(msg, now))
        return lines

    @staticmethod
    def _phase(msg: Any) -> tuple[int, bool]:
        """The executor's state, with running and holding as one (they alternate every chunk in sync mode),
        and whether it waits for the arm (not enabled)."""
        waiting = msg.state == st.EXECUTOR_HOLDING and msg.message.startswith("waiting for the arm")
        return (st.EXECUTOR_RUNNING if msg.state == st.EXECUTOR_HOLDING else msg.state), waiting

    def _periodic_line(self, msg: Any, now: float) -> str:
        line = (
            f"executor: executing, {msg.chunks_received} chunks, {msg.actions_left} actions left, "
            f"{msg.executed_steps} steps, idle ticks {msg.idle_ticks}"
        )
        policy = self._policy
        if policy is not None and policy.chunks_published:
            line += f"; policy: inference {seconds(policy.last_inference_latency):.2f} s"
            if self._last_chunk_at is not None:
                line += f", last chunk {now - self._last_chunk_at:.1f} s ago"
        return line

    # ---------------------------------------------------------------------------------------------- arm
    def on_arm(self, msg: Any, now: float) -> list[str]:
        """A line when the arm's state, epoch or (not enabled) its reason changes: faults, torque on/off."""
        quiet = msg.state == st.ARM_ENABLED and "shutdown" not in msg.message
        key = (msg.state, msg.epoch, "" if quiet else msg.message)
        if key == self._arm_key:
            return []
        self._arm_key = key
        return [self.hint("arm", st.describe_arm(msg))]
