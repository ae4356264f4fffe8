"""The suite's status messages in plain words, for `smolvla-ctl status` and the runner's progress lines.

ROS-free: the functions read the fields of ``smolvla_msgs`` ArmStatus, PolicyStatus and ExecutorStatus
messages (any object with those fields), whose state constants are repeated here.
"""

from __future__ import annotations

import time
from typing import Any

from smolvla_common.timeutil import seconds

# smolvla_msgs/ArmStatus, PolicyStatus and ExecutorStatus state constants
ARM_DISCONNECTED, ARM_IDLE, ARM_ENABLED, ARM_FAULT = 0, 1, 2, 3
POLICY_LOADING, POLICY_READY, POLICY_INFERRING, POLICY_ERROR = 0, 1, 2, 3
EXECUTOR_STOPPED, EXECUTOR_RUNNING, EXECUTOR_PAUSED, EXECUTOR_HOLDING, EXECUTOR_ESTOP = 0, 1, 2, 3, 4

EXECUTOR_STATES = {
    EXECUTOR_STOPPED: "stopped",
    EXECUTOR_RUNNING: "running",
    EXECUTOR_PAUSED: "paused",
    EXECUTOR_HOLDING: "holding",
    EXECUTOR_ESTOP: "E-STOP",
}
#: arm messages that only repeat the state
_PLAIN_ARM_MESSAGES = {"", "torque on", "torque off", "torque on (simulation)", "torque off (simulation)"}


def clock_text(stamp_s: float) -> str:
    """A node-clock time: local wall time for ROS time, seconds for simulated time (``use_sim_time``)."""
    if stamp_s > 1e9:  # seconds since 1970: ROS time follows the wall clock
        return time.strftime("%H:%M:%S", time.localtime(stamp_s))
    return f"t={stamp_s:.1f} s (sim time)"


def describe_arm(msg: Any) -> str:
    """E.g. ``arm: enabled since 12:03:04 (epoch 2)``, ``arm: torque off (calibration mismatch ...)``."""
    message = msg.message.strip()
    if msg.state == ARM_ENABLED:
        detail = "" if message in _PLAIN_ARM_MESSAGES else f" ({message})"
        return f"arm: enabled since {clock_text(seconds(msg.enabled_since))} (epoch {msg.epoch}){detail}"
    head = {ARM_DISCONNECTED: "disconnected", ARM_IDLE: "torque off", ARM_FAULT: "FAULT"}.get(
        msg.state, f"state {msg.state}"
    )
    if message.lower().startswith(head.lower()):  # "torque off (shutdown)", "FAULT, torque disabled: ..."
        return f"arm: {message}"
    return f"arm: {head}" + ("" if message in _PLAIN_ARM_MESSAGES else f" ({message})")


def describe_policy(msg: Any, last_chunk_age_s: float | None = None) -> str:
    """E.g. ``policy: ready (model loaded), 12 chunks, last chunk 3 s ago, inference 0.21 s, task '...'``."""
    if msg.state == POLICY_LOADING:
        return f"policy: loading {msg.policy_id} on {msg.device}"
    if msg.state == POLICY_ERROR:
        return f"policy: ERROR: {msg.message}"
    word = "inferring" if msg.state == POLICY_INFERRING else "ready"
    parts = [f"policy: {word} (model loaded, {msg.device})", f"{msg.chunks_published} chunks published"]
    if last_chunk_age_s is not None:
        parts.append(f"last chunk {last_chunk_age_s:.1f} s ago")
    if msg.chunks_published:
        parts.append(f"inference {seconds(msg.last_inference_latency):.2f} s")
    parts.append(f"task '{msg.task}'" if msg.task else 'no task yet (smolvla-instruct "...")')
    if msg.observations_refused:
        parts.append(f"{msg.observations_refused} observations refused")
    line = ", ".join(parts)
    if msg.message.startswith("observation refused"):
        line += f"; last: {msg.message}"
    return line


def describe_executor(msg: Any) -> str:
    """E.g. ``executor: running async, 17 chunks received, 25 actions left (0.83 s), idle ticks 0``."""
    state = EXECUTOR_STATES.get(msg.state, f"state {msg.state}")
    mode = "sync" if msg.mode == 1 else "async"
    parts = [f"executor: {state} {mode}" + (" (shadow)" if msg.shadow else "")]
    dropped = f" ({msg.chunks_dropped} dropped)" if msg.chunks_dropped else ""
    parts.append(f"{msg.chunks_received} chunks received{dropped}")
    parts.append(f"{msg.actions_left} actions left ({seconds(msg.horizon_left):.2f} s)")
    parts.append(f"{msg.executed_steps} steps executed, idle ticks {msg.idle_ticks}")
    line = ", ".join(parts)
    if msg.state != EXECUTOR_RUNNING and msg.message:
        line += f": {msg.message}"
    return line
