"""Follower arm node: thin ROS wiring around :class:`so100_driver.arm.follower.ArmController`.

Topics are relative (namespace the node for a second arm): publishes ``joint_states``, ``~/commanded``
(the goals the servos hold, rad), ``~/status`` (smolvla_msgs/ArmStatus: state and safety epoch, latched)
and ``/diagnostics``; subscribes ``joint_commands`` (stamped; commands stamped before the latest torque-on
are ignored); serves ``~/torque`` (std_srvs/SetBool).

Threads: the control loop runs on its own thread, paced by the monotonic clock (the bus is hardware);
trajectory times and message stamps use the node clock, so ``use_sim_time`` works. The executor thread
only takes commands and torque requests, under the controller's lock.

Logging: a calibration mismatch is logged once (with the fix); a rejected command once per cause and
torque episode, then only counted (``rejections_by_cause`` in ``arm: bus``); on shutdown the torque-off is
logged and published as the last ``~/status`` ("torque off (shutdown)").
"""

from __future__ import annotations

import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from smolvla_common.arm_status import arm_status_msg
from smolvla_common.joints import GRIPPER
from smolvla_common.node_main import run_node
from smolvla_common.parameters import declare_parameters, require
from smolvla_common.qos import LATCHED
from smolvla_common.timeutil import clock_seconds, seconds
from smolvla_msgs.msg import ArmStatus
from so100_driver.arm.commands import UNSTAMPED, CommandError, RejectionLog
from so100_driver.arm.follower import ArmController
from so100_driver.arm.link import ArmState, CycleResult
from so100_driver.arm.safety import SafetyConfig
from so100_driver.arm_ros import (
    BUS_PARAMETERS,
    joint_state,
    load_joints,
    open_exclusively,
    to_diagnostic_array,
)
from so100_driver.bus import FeetechBus

START_TORQUE_ATTEMPTS = 10  # enable_torque_on_start: torque-on attempts while only the bus fails
START_TORQUE_RETRY_S = 0.5

PARAMETERS = {
    "port": "/dev/ttyACM0",
    **BUS_PARAMETERS,
    "gripper_joint": GRIPPER,
    "control_rate_hz": 100.0,
    "telemetry_every": 1,
    "retry_budget_ms": 40.0,
    "configure_servos": True,
    "enable_torque_on_start": False,
    "torque_off_on_shutdown": True,
} | {name: field.default for name, field in SafetyConfig.__dataclass_fields__.items()}


class ArmNode(Node):
    def __init__(self, **kwargs):
        super().__init__(kwargs.pop("node_name", "arm"), **kwargs)
        p = declare_parameters(self, PARAMETERS)
        for name in ("control_rate_hz", "diagnostics_rate_hz", "max_step", "max_velocity"):
            require(p[name] > 0, name, "a value > 0", p[name])
        self.joint_names = list(p["joint_names"])
        joints = load_joints(p["calibration_file"], self.joint_names, p["motor_ids"], p["gripper_joint"])
        safety = SafetyConfig(**{k: p[k] for k in SafetyConfig.__dataclass_fields__})
        self.bus = FeetechBus(
            p["port"], p["baudrate"], p["bus_timeout_ms"], p["bus_retries"], p["retry_budget_ms"]
        )
        open_exclusively(self.bus)
        self.period = 1.0 / p["control_rate_hz"]
        self.controller = ArmController(
            self.bus,
            joints,
            safety,
            configure_servos=p["configure_servos"],
            telemetry_every=p["telemetry_every"],
            period_s=self.period,
        )
        self.diagnostics_period = 1.0 / p["diagnostics_rate_hz"]
        self.torque_off_on_shutdown = p["torque_off_on_shutdown"]
        self.enable_on_start = p["enable_torque_on_start"]
        self._start_torque_lock = threading.Lock()
        self._start_torque_attempts = 0
        self._start_torque_retry_at: float | None = None  # monotonic time of the next start-up torque-on
        self._start_torque_cancelled = False  # a torque request came on the service: no start-up torque-on

        self.state_pub = self.create_publisher(JointState, "joint_states", 10)
        self.commanded_pub = self.create_publisher(JointState, "~/commanded", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.status_pub = self.create_publisher(ArmStatus, "~/status", LATCHED)
        self._last_status: tuple | None = None
        self._episode: tuple | None = None  # (state, epoch): a new one logs each rejection cause once more
        self.rejections = RejectionLog()
        self._calibration_logged: set[str] = set()
        self._stopped = False
        self.create_subscription(JointTrajectory, "joint_commands", self._on_command, 10)
        self.create_service(SetBool, "~/torque", self._on_torque)

        self.cycle_times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="arm_control", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------ callbacks
    def _now(self) -> float:
        return clock_seconds(self)

    def _on_command(self, msg: JointTrajectory) -> None:
        stamp = seconds(msg.header.stamp)
        points = [(seconds(p.time_from_start), list(p.positions)) for p in msg.points]
        try:
            if stamp == 0:
                self.controller.reject(UNSTAMPED)
            self.controller.command(self._now(), list(msg.joint_names), points, start_time=stamp)
        except CommandError as exc:
            if self.rejections.first(str(exc)):
                self.get_logger().error(
                    f"joint_commands rejected: {exc} (logged once; more of the same are counted in "
                    "/diagnostics 'arm: bus' rejections_by_cause)"
                )

    def _on_torque(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        with self._start_torque_lock:
            self._start_torque_cancelled = True  # a torque request from outside replaces the start-up one
            self._start_torque_retry_at = None
            response.success, response.message = self._set_torque(request.data)
        return response

    def _set_torque(self, on: bool, retrying: str = "") -> tuple[bool, str]:
        """Torque on or off, logged and published; ``retrying`` (what happens next) turns a torque-on that
        failed only on the bus into a warning."""
        ok, message = self.controller.enable_torque(self._now()) if on else self.controller.disable_torque()
        self._calibration_logged.update(self.controller.calibration_problems)  # named in this answer
        text = f"torque {'on' if on else 'off'}: {message}"
        if ok:  # one call site per severity: rclpy refuses to change a call site's severity
            self.get_logger().info(text)
        elif retrying and self.controller.enable_failed_on_bus:
            self.get_logger().warning(f"{text}; {retrying}")
        else:
            self.get_logger().error(text)
        self._publish_status()
        return ok, message

    def _torque_on_at_start(self) -> None:
        """enable_torque_on_start: torque on, asked again (up to START_TORQUE_ATTEMPTS times,
        START_TORQUE_RETRY_S apart) while only a bus transfer failed: one late reply on a loaded machine
        must not leave the arm limp. A calibration mismatch, a moving arm or a joint out of range is not
        asked again, and nothing is done after a torque request on the service (one may come while the
        node still connects, before the first attempt)."""
        with self._start_torque_lock:
            if self._start_torque_cancelled:
                return
            self._start_torque_attempts += 1
            attempt = self._start_torque_attempts
            retrying = ""
            if attempt < START_TORQUE_ATTEMPTS:
                retrying = f"trying again in {START_TORQUE_RETRY_S} s ({attempt}/{START_TORQUE_ATTEMPTS})"
            ok, _ = self._set_torque(True, retrying)
            again = not ok and self.controller.enable_failed_on_bus and retrying
            self._start_torque_retry_at = time.monotonic() + START_TORQUE_RETRY_S if again else None
            if self.controller.state == ArmState.DISCONNECTED:  # lost meanwhile: torque on once it is back
                with self.controller.lock:
                    self.controller.resume_torque = True

    def _publish_status(self, periodic: bool = False) -> None:
        """ArmStatus when the state, epoch or message changed (or ``periodic``)."""
        c = self.controller
        with c.lock:
            state, epoch, since = c.state, c.epoch, c.enabled_since
            message = c.status_message()
        key = (state, epoch, message)
        if key == self._last_status and not periodic:
            return
        self._last_status = key
        if (state, epoch) != self._episode:
            self._episode = (state, epoch)
            self.rejections.new_episode()
        stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(arm_status_msg(stamp, state.value, epoch, since, message))

    # ----------------------------------------------------------------------------------------- the loop
    def _start(self) -> None:
        controller = self.controller
        if not controller.connect(self._now()):
            self.get_logger().error(f"servo bus not available, retrying: {controller.connect_error}")
            with self._start_torque_lock:  # torque on once the bus answers (plugged in or powered later)
                if self.enable_on_start and not self._start_torque_cancelled:
                    with controller.lock:
                        controller.resume_torque = True
        elif self.enable_on_start and not controller.calibration_problems:
            self._torque_on_at_start()
        self._log_events()
        self._publish_status(periodic=True)

    def _log_events(self) -> None:
        """The controller's events; a calibration mismatch once, as one error with the fix."""
        problems = [p for p in self.controller.calibration_problems if p not in self._calibration_logged]
        if problems:
            self._calibration_logged.update(problems)
            self.get_logger().error(
                "calibration mismatch, torque stays off: "
                + "; ".join(problems)
                + ". "
                + self.controller.calibration_fix_hint()
            )
        for event in self.controller.drain_events():
            if "calibration mismatch: " in event and all(
                p in self._calibration_logged for p in self.controller.calibration_problems
            ):
                continue  # "calibration mismatch: X", "reconnected, but torque stays off: calibration ..."
            self.get_logger().warning(event)

    def _loop(self) -> None:
        self._start()
        next_cycle = time.monotonic()
        next_diag = next_cycle
        while not self._stop.is_set():
            started = time.monotonic()
            retry_at = self._start_torque_retry_at
            if retry_at is not None and started >= retry_at:
                self._torque_on_at_start()
            result = self.controller.step(self._now())
            self._publish(result)
            self._log_events()
            periodic = started >= next_diag
            self._publish_status(periodic)
            if periodic:
                next_diag = started + self.diagnostics_period
                self._publish_diagnostics()
            self.cycle_times.append(time.monotonic() - started)
            del self.cycle_times[:-1000]
            next_cycle += self.period
            delay = next_cycle - time.monotonic()
            if delay < -self.period:  # overran by more than a cycle (e.g. bus timeouts): don't catch up
                next_cycle = time.monotonic()
            elif delay > 0:
                self._stop.wait(delay)

    def _publish_diagnostics(self) -> None:
        reports = self.controller.reports("arm")
        reports[0].values["rejections_by_cause"] = self.rejections.summary()  # reports[0]: "arm: bus"
        stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(to_diagnostic_array(stamp, reports, self.bus.port_name))

    def _publish(self, result: CycleResult) -> None:
        stamp = self.get_clock().now().to_msg()
        if result.positions is not None:
            self.state_pub.publish(joint_state(stamp, result, result.positions, self.joint_names))
        if result.goals is not None:
            self.commanded_pub.publish(joint_state(stamp, result, result.goals, self.joint_names))

    def stop(self) -> None:
        """Stop the control loop and release the arm (torque off unless configured to hold); say so in the
        log and in a last ``~/status``."""
        if not hasattr(self, "_thread") or self._stopped:
            return  # construction failed before the bus was opened, or stopped already
        self._stopped = True
        self._stop.set()
        self._thread.join(timeout=5.0)
        controller = self.controller
        if controller.state == ArmState.DISCONNECTED:
            ok, message = False, "shutdown while disconnected from the servo bus: torque state unknown"
        elif self.torque_off_on_shutdown:
            ok, detail = controller.disable_torque()
            message = "torque off (shutdown)" if ok else f"shutdown: {detail}: support the arm"
        else:
            ok, message = True, "shutdown: torque left on (torque_off_on_shutdown is false)"
        if ok:  # one call site per severity
            self.get_logger().info(message)
        else:
            self.get_logger().error(message)
        self._publish_final_status(message)
        controller.shutdown(torque_off=False)

    def _publish_final_status(self, message: str) -> None:
        c = self.controller
        if not self.context.ok():
            return
        stamp = self.get_clock().now().to_msg()
        try:
            self.status_pub.publish(arm_status_msg(stamp, c.state.value, c.epoch, c.enabled_since, message))
        except Exception:  # the context went down meanwhile: nobody is listening any more
            if self.context.ok():
                raise

    def destroy_node(self) -> None:
        self.stop()
        super().destroy_node()

    @property
    def state(self) -> ArmState:
        return self.controller.state


def main(args=None) -> int:
    return run_node(ArmNode, "arm_node", args)


if __name__ == "__main__":
    sys.exit(main())
