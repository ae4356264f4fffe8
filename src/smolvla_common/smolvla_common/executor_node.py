"""Executor node: wiring between ROS messages and :class:`~smolvla_common.executor_core.ChunkExecutorCore`.

Topics and services are relative (namespace them, remap them): subscribes ``smolvla/action_chunk``,
``joint_states`` and ``arm/status`` (the arm's state and safety epoch: the plan is dropped on every
interruption); publishes ``joint_commands`` (one point, reached one tick later, stamped),
``smolvla/request``, ``smolvla/executor_status`` and ``/diagnostics``; serves ``~/start``, ``~/stop``,
``~/estop`` (std_srvs/Trigger; e-stop succeeds only once the arm acknowledged torque off on
``arm/torque``) and ``~/pause`` (std_srvs/SetBool: true pauses, false resumes). Ticks run on the node
clock (``use_sim_time`` works). No torch here.

Threads: the node spins on one single-threaded executor; the tick is a timer there, next to short callbacks
only. The e-stop service is a coroutine that waits for the torque service: it has a callback group of its
own and so has the torque client, so the reply can be taken while the e-stop waits (one group for both
would deadlock); the other groups keep ticks and messages going meanwhile.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.task import Future
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from smolvla_common.arm_status import ALWAYS_ENABLED, arm_report
from smolvla_common.chunk import chunk_from_msg
from smolvla_common.executor_core import LIVE_FIELDS, ChunkExecutorCore, ExecutorConfig, ExecutorStats, State
from smolvla_common.joints import SO101_JOINTS
from smolvla_common.node_main import run_node
from smolvla_common.parameters import ParameterError, accept_live_changes, declare_parameters, require
from smolvla_common.qos import LATCHED, RELIABLE
from smolvla_common.timeutil import clock_seconds, duration_msg, seconds
from smolvla_msgs.msg import ActionChunk, ArmStatus, ChunkRequest, ExecutorStatus

try:
    from rclpy.timer import TimerInfo
except ImportError:  # ROS 2 Humble: timers give no call info; the tick's own time is used as the grid

    class TimerInfo:
        pass


#: Node-only parameters (the core's are the fields of :class:`ExecutorConfig`, with its defaults).
NODE_PARAMETERS = {
    "shadow": False,
    "start_on_launch": False,
    "status_rate_hz": 10.0,
    "diagnostics_period_s": 1.0,
    "task": "",
    "wait_for_arm_status": True,
    "torque_timeout_s": 1.0,
}


def executor_parameters() -> dict[str, object]:
    """Every parameter of the node with its default: the core's configuration fields, then the node's."""
    defaults: dict[str, object] = {"joint_names": list(SO101_JOINTS)}
    for field in dataclasses.fields(ExecutorConfig):
        if field.name != "joint_names":
            defaults[field.name] = list(field.default) if isinstance(field.default, tuple) else field.default
    defaults["joint_min_rad"] = [-math.pi] * len(SO101_JOINTS)
    defaults["joint_max_rad"] = [math.pi] * len(SO101_JOINTS)
    return defaults | NODE_PARAMETERS


class ExecutorNode(Node):
    """Thin ROS wrapper around the executor core (see the package README, section "Executor")."""

    def __init__(self, node_name: str = "executor", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        try:
            values = declare_parameters(self, executor_parameters())
            core_fields = {f.name for f in dataclasses.fields(ExecutorConfig)}
            self.config = ExecutorConfig(**{k: v for k, v in values.items() if k in core_fields})
            self.params = {k: v for k, v in values.items() if k in NODE_PARAMETERS}
            for name in ("status_rate_hz", "diagnostics_period_s", "torque_timeout_s"):
                require(self.params[name] > 0, name, "a value > 0", self.params[name])
        except ParameterError:
            self.destroy_node()
            raise
        accept_live_changes(self, executor_parameters(), self._reconfigure, LIVE_FIELDS | {"task"})
        self.shadow = bool(self.params["shadow"])
        # without an arm status (an arm driver that publishes none), or in shadow mode (nothing is sent to
        # the arm: a replayed bag has no arm), the arm counts as enabled until it says otherwise
        waits = self.params["wait_for_arm_status"] and not self.shadow
        self.core = ChunkExecutorCore(self.config, None if waits else ALWAYS_ENABLED)
        self._lock = threading.Lock()
        self.joint_state_errors = 0
        self.torque_message = ""

        tick_group = MutuallyExclusiveCallbackGroup()
        io_group = MutuallyExclusiveCallbackGroup()
        estop_group = MutuallyExclusiveCallbackGroup()  # e-stop waits for the torque service ...
        self.torque_group = MutuallyExclusiveCallbackGroup()  # ... whose reply must still get through
        self.command_pub = self.create_publisher(JointTrajectory, "joint_commands", 10)
        self.shadow_pub = self.create_publisher(JointTrajectory, "~/shadow_command", 10)
        self.request_pub = self.create_publisher(ChunkRequest, "smolvla/request", RELIABLE)
        self.status_pub = self.create_publisher(ExecutorStatus, "smolvla/executor_status", RELIABLE)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(
            ActionChunk, "smolvla/action_chunk", self._on_chunk, RELIABLE, callback_group=io_group
        )
        self.create_subscription(
            JointState, "joint_states", self._on_joint_state, qos_profile_sensor_data, callback_group=io_group
        )
        self.create_subscription(
            ArmStatus, "arm/status", self._on_arm_status, LATCHED, callback_group=io_group
        )
        self.create_service(Trigger, "~/start", self._on_start, callback_group=io_group)
        self.create_service(Trigger, "~/stop", self._on_stop, callback_group=io_group)
        self.create_service(SetBool, "~/pause", self._on_pause, callback_group=io_group)
        self.create_service(Trigger, "~/estop", self._on_estop, callback_group=estop_group)
        self.torque_client = self.create_client(SetBool, "arm/torque", callback_group=self.torque_group)
        self.tick_timer = self.create_timer(self.config.period_s, self._on_tick, callback_group=tick_group)
        self.create_timer(1.0 / self.params["status_rate_hz"], self._publish_status, callback_group=io_group)
        self.create_timer(
            self.params["diagnostics_period_s"], self._publish_diagnostics, callback_group=io_group
        )
        if self.params["start_on_launch"]:
            self.core.start(self._now())
        self.get_logger().info(
            f"executor ready: {self.config.mode} at {self.config.rate_hz} Hz, blend {self.config.blend}, "
            f"threshold {self.config.threshold}, shadow {self.shadow}, "
            f"{'running' if self.params['start_on_launch'] else 'stopped (call ~/start)'}"
        )

    # ------------------------------------------------------------------ callbacks

    def _now(self) -> float:
        return clock_seconds(self)

    def _reconfigure(self, changes: dict) -> None:
        """``ros2 param set`` on a live parameter: the core's from its next tick, the request task at once."""
        with self._lock:
            self.core.reconfigure(**{k: v for k, v in changes.items() if k != "task"})
            self.config = self.core.config
            self.params["task"] = changes.get("task", self.params["task"])
        self.get_logger().info(f"parameters changed: {changes}")

    def _on_tick(self, info: TimerInfo = None) -> None:  # rclpy passes TimerInfo by exact annotation
        with self._lock:
            self.core.jitter.record(time.monotonic())
            now_msg = self.get_clock().now()
            expected = getattr(info, "expected_call_time", None)
            scheduled = expected.nanoseconds * 1e-9 if expected is not None else None
            result = self.core.tick(now_msg.nanoseconds * 1e-9, scheduled)
        if result.command is not None:
            command = JointTrajectory(joint_names=list(self.config.joint_names))
            command.header.stamp = now_msg.to_msg()
            command.points = [
                JointTrajectoryPoint(
                    positions=result.command.tolist(), time_from_start=duration_msg(self.config.period_s)
                )
            ]
            (self.shadow_pub if self.shadow else self.command_pub).publish(command)
        if result.request is not None:
            request = ChunkRequest(request_id=result.request.request_id, must_go=result.request.must_go)
            request.header.stamp = now_msg.to_msg()
            request.task = self.params["task"]
            request.pending.joint_names = list(self.config.joint_names)
            request.pending.points = [
                JointTrajectoryPoint(positions=row.tolist(), time_from_start=duration_msg(t))
                for t, row in zip(
                    result.request.pending_time_from_start, result.request.pending_positions, strict=True
                )
            ]
            self.request_pub.publish(request)

    def _on_joint_state(self, msg: JointState) -> None:
        stamp = seconds(msg.header.stamp) or None
        with self._lock:
            error = self.core.on_joint_state(
                self._now(), list(msg.name), np.asarray(msg.position, float), stamp
            )
        if error:
            self.joint_state_errors += 1
            self.get_logger().warning(f"joint_states: {error}", throttle_duration_sec=2.0)

    def _on_arm_status(self, msg: ArmStatus) -> None:
        with self._lock:
            event = self.core.on_arm_status(self._now(), arm_report(msg))
        if event:
            self.get_logger().warning(f"arm/status: {event}")
            self._publish_status(event)

    def _on_chunk(self, msg: ActionChunk) -> None:
        now = self._now()
        try:
            chunk = chunk_from_msg(msg)
        except ValueError as exc:
            with self._lock:
                reason = self.core.drop(int(msg.chunk_id), str(exc))
        else:
            with self._lock:
                verdict = self.core.on_chunk(now, chunk)
            if verdict.accepted:
                return
            reason = verdict.reason
        self.get_logger().warning(
            f"smolvla/action_chunk: chunk {msg.chunk_id} dropped: {reason}", throttle_duration_sec=1.0
        )
        self._publish_status(f"chunk {msg.chunk_id} dropped: {reason}")

    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            response.success, response.message = self.core.start(self._now())
        self.get_logger().info(f"start: {response.message}")
        return response

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            response.success, response.message = self.core.stop(self._now())
        self.get_logger().info(f"stop: {response.message}")
        return response

    def _on_pause(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        with self._lock:
            action = self.core.pause if request.data else self.core.resume
            response.success, response.message = action(self._now())
        return response

    async def _on_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Stop commanding at once, then ask the arm to disable torque and wait for its answer: the
        e-stop succeeds only when the arm acknowledged torque off."""
        with self._lock:
            self.core.estop(self._now())
        name = self.resolve_service_name("arm/torque")
        if not self.torque_client.service_is_ready():
            ok, self.torque_message = False, f"torque service {name} not available: torque NOT disabled"
        else:
            result = await self._call_torque_off()
            ok = result is not None and result.success
            if result is None:
                timeout = self.params["torque_timeout_s"]
                self.torque_message = f"no answer from {name} within {timeout} s: torque NOT confirmed off"
            else:
                self.torque_message = f"torque disable {'ok' if ok else 'FAILED'} ({result.message})"
        response.success = ok
        response.message = "E-STOP: nothing is commanded; " + self.torque_message
        self.get_logger().error(response.message)
        self._publish_status(response.message)
        return response

    def _call_torque_off(self) -> Future:
        """A future with the torque service's response, or None after ``torque_timeout_s``."""
        answer = Future()
        call = self.torque_client.call_async(SetBool.Request(data=False))

        def finish(result) -> None:
            if not answer.done():
                answer.set_result(result)

        def on_reply(future) -> None:
            try:
                finish(future.result())
            except Exception:  # a transport failure is an unconfirmed torque-off, never a crash
                finish(None)

        def on_timeout() -> None:
            self.torque_client.remove_pending_request(call)
            finish(None)

        call.add_done_callback(on_reply)
        timer = self.create_timer(
            self.params["torque_timeout_s"], on_timeout, callback_group=self.torque_group
        )
        answer.add_done_callback(lambda _: self.destroy_timer(timer))
        return answer

    # ------------------------------------------------------------------ status

    def stats(self) -> ExecutorStats:
        with self._lock:
            return self.core.stats(self._now())

    def _publish_status(self, message: str | None = None) -> None:
        """Publish ExecutorStatus; ``message`` overrides the core's message (for event-driven updates)."""
        now_msg = self.get_clock().now()
        with self._lock:
            s = self.core.stats(now_msg.nanoseconds * 1e-9)
        msg = ExecutorStatus(
            mode=ExecutorStatus.MODE_SYNC if s.mode == "sync" else ExecutorStatus.MODE_ASYNC,
            state=int(s.state),
            shadow=self.shadow,
            message=message
            or (s.message if s.state != State.ESTOP else f"{s.message}; {self.torque_message}"),
            horizon_left=duration_msg(s.horizon_left_s),
            actions_left=s.actions_left,
            executed_steps=s.executed_steps,
            idle_ticks=s.idle_ticks,
            chunks_received=s.chunks_received,
            chunks_dropped=s.chunks_dropped,
            requests_sent=s.requests_sent,
            last_boundary_jump=s.last_boundary_jump,
            max_boundary_jump=s.max_boundary_jump,
            last_observation_to_execution=duration_msg(s.last_observation_to_execution_s),
            last_receipt_to_execution=duration_msg(s.last_receipt_to_execution_s),
            tick_jitter_p99=s.tick_jitter_p99_s,
            joint_names=list(self.config.joint_names),
            last_command=[] if s.last_command is None else s.last_command.tolist(),
        )
        msg.header.stamp = now_msg.to_msg()
        self.status_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        now_msg = self.get_clock().now()
        s = self.stats()
        level = DiagnosticStatus.OK
        if s.state == State.ESTOP:
            level = DiagnosticStatus.ERROR
        elif s.state == State.HOLDING and ("deadman" in s.message or "no joint state" in s.message):
            level = DiagnosticStatus.WARN
        values = {
            "state": s.state.name,
            "mode": s.mode,
            "blend": self.config.blend,
            "shadow": str(self.shadow),
            "horizon_left_s": f"{s.horizon_left_s:.3f}",
            "actions_left": str(s.actions_left),
            "executed_steps": str(s.executed_steps),
            "idle_ticks": str(s.idle_ticks),
            "idle_ticks_before_first_chunk": str(s.idle_ticks_before_first_chunk),
            "chunks_received": str(s.chunks_received),
            "chunks_dropped": str(s.chunks_dropped),
            "last_drop_reason": s.last_drop_reason,
            "requests_sent": str(s.requests_sent),
            "request_timeouts": str(s.request_timeouts),
            "limited_ticks": str(s.limited_ticks),
            "last_boundary_jump_rad": f"{s.last_boundary_jump:.4f}",
            "max_boundary_jump_rad": f"{s.max_boundary_jump:.4f}",
            "observation_to_execution_s": f"{s.last_observation_to_execution_s:.4f}",
            "receipt_to_execution_s": f"{s.last_receipt_to_execution_s:.4f}",
            "request_round_trip_s": f"{s.last_request_round_trip_s:.4f}",
            "tick_jitter_p50_s": f"{s.tick_jitter_p50_s:.6f}",
            "tick_jitter_p99_s": f"{s.tick_jitter_p99_s:.6f}",
            "tick_jitter_max_s": f"{s.tick_jitter_max_s:.6f}",
            "joint_state_errors": str(self.joint_state_errors),
            "torque": self.torque_message,
        }
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: action-chunk executor",
            hardware_id="",
            message=s.message,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = now_msg.to_msg()
        self.diagnostics_pub.publish(array)


def main(args: list[str] | None = None) -> int:
    # hand the GIL over within 1 ms (default 5 ms) so a due tick is not kept waiting by another thread
    sys.setswitchinterval(0.001)
    return run_node(ExecutorNode, "executor_node", args)


if __name__ == "__main__":
    sys.exit(main())
