"""Follower arm node: thin ROS wiring around :class:`so100_driver.arm_controller.ArmController`.

The control loop runs on its own thread, paced by the monotonic clock (the bus is hardware); trajectory
times and message stamps use the node clock, so ``use_sim_time`` works. Publishes ``/joint_states``,
``~/commanded`` (the goals actually written, rad) and ``/diagnostics``; subscribes ``/joint_commands``;
serves ``~/torque`` (std_srvs/SetBool).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from so100_driver import calibration
from so100_driver.arm_controller import (
    ArmController,
    ArmState,
    CommandError,
    CycleResult,
    Joint,
    SafetyConfig,
    StatusReport,
)
from so100_driver.bus import FeetechBus
from so100_driver.node_main import run_node

DEFAULT_JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
DEFAULT_IDS = [1, 2, 3, 4, 5, 6]
ROBOT_TYPES = ("so100", "so101")


class ParameterError(ValueError):
    """A node parameter is missing or invalid; the message names it."""


def load_joints(calibration_file: str, names: Sequence[str], ids: Sequence[int], gripper: str) -> list[Joint]:
    """Joints from a LeRobot calibration file, keyed by joint name; clear errors for every mismatch."""
    if not calibration_file:
        raise ParameterError(
            "parameter 'calibration_file' is empty: give the path of the LeRobot calibration JSON"
        )
    if len(names) != len(ids):
        raise ParameterError(
            f"parameters 'joint_names' ({len(names)}) and 'motor_ids' ({len(ids)}) differ in length"
        )
    if gripper and gripper not in names:
        raise ParameterError(f"parameter 'gripper_joint' = {gripper!r} is not in joint_names {list(names)}")
    try:
        motors = calibration.load_calibration(calibration_file).motors
    except (OSError, ValueError) as exc:
        raise ParameterError(
            f"parameter 'calibration_file': cannot load {calibration_file!r}: {exc}"
        ) from exc
    joints = []
    for name, servo_id in zip(names, ids, strict=True):
        if name not in motors:
            raise ParameterError(
                f"calibration file {calibration_file!r} has no motor {name!r} (it has {sorted(motors)})"
            )
        motor = motors[name]
        if motor.id != servo_id:
            raise ParameterError(
                f"calibration file says {name!r} is id {motor.id}, but parameter 'motor_ids' gives {servo_id}"
            )
        joints.append(
            Joint(
                name,
                servo_id,
                motor.range_min,
                motor.range_max,
                motor.homing_offset,
                motor.drive_mode,
                is_gripper=(name == gripper),
            )
        )
    return joints


def declare_parameters(node: Node, defaults: dict) -> dict:
    """Declare parameters with defaults; floats also accept ints (YAML ``rate: 100``). Clear type errors."""
    values = {}
    for name, default in defaults.items():
        try:
            if isinstance(default, float):
                node.declare_parameter(name, default, ParameterDescriptor(dynamic_typing=True))
            else:
                node.declare_parameter(name, default)
        except (InvalidParameterTypeException, TypeError) as exc:
            raise ParameterError(
                f"parameter '{name}' has the wrong type: expected {type(default).__name__} "
                f"like {default!r} ({exc})"
            ) from None
        value = node.get_parameter(name).value
        if isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ParameterError(f"parameter '{name}' must be a number, got {value!r}")
            value = float(value)
        values[name] = value
    return values


def to_diagnostic_array(stamp, reports: Sequence[StatusReport], hardware_id: str) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    for report in reports:
        status = DiagnosticStatus(
            level=bytes([report.level]), name=report.name, message=report.message, hardware_id=hardware_id
        )
        status.values = [KeyValue(key=k, value=v) for k, v in report.values.items()]
        msg.status.append(status)
    return msg


def joint_state(stamp, result: CycleResult, values: dict[str, float], names: Sequence[str]) -> JointState:
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(names)
    msg.position = [float(values[n]) for n in names]
    if result.velocities is not None and values is result.positions:
        msg.velocity = [float(result.velocities[n]) for n in names]
    if result.efforts is not None and values is result.positions:
        msg.effort = [float(result.efforts[n]) for n in names]
    return msg


class ArmNode(Node):
    def __init__(self, **kwargs):
        super().__init__("arm", **kwargs)
        p = self._declare_parameters()
        self.joint_names = list(p["joint_names"])
        joints = load_joints(
            p["calibration_file"], self.joint_names, list(p["motor_ids"]), p["gripper_joint"]
        )
        safety = SafetyConfig(**{k: p[k] for k in SafetyConfig.__dataclass_fields__})
        if not safety.max_step > 0:
            raise ParameterError(f"parameter 'max_step' must be > 0 rad per cycle, got {safety.max_step}")
        self.bus = FeetechBus(
            p["port"], p["baudrate"], p["bus_timeout_ms"], p["bus_retries"], p["retry_budget_ms"]
        )
        self.controller = ArmController(
            self.bus,
            joints,
            safety,
            configure_servos=p["configure_servos"],
            telemetry_every=p["telemetry_every"],
        )
        self.period = 1.0 / p["control_rate_hz"]
        self.diagnostics_period = 1.0 / p["diagnostics_rate_hz"]
        self.torque_off_on_shutdown = p["torque_off_on_shutdown"]
        self.enable_on_start = p["enable_torque_on_start"]

        self.state_pub = self.create_publisher(JointState, "/joint_states", 10)
        self.commanded_pub = self.create_publisher(JointState, "~/commanded", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointTrajectory, "/joint_commands", self._on_command, 10)
        self.create_service(SetBool, "~/torque", self._on_torque)

        self.cycle_times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="arm_control", daemon=True)
        self._thread.start()

    def _declare_parameters(self) -> dict:
        defaults = {
            "port": "/dev/ttyACM0",
            "robot_type": "so101",
            "calibration_file": "",
            "joint_names": DEFAULT_JOINTS,
            "motor_ids": DEFAULT_IDS,
            "gripper_joint": "gripper",
            "baudrate": 1_000_000,
            "control_rate_hz": 100.0,
            "diagnostics_rate_hz": 2.0,
            "telemetry_every": 1,
            "bus_timeout_ms": 30.0,
            "bus_retries": 2,
            "retry_budget_ms": 40.0,
            "configure_servos": True,
            "enable_torque_on_start": False,
            "torque_off_on_shutdown": True,
        }
        defaults |= {k: f.default for k, f in SafetyConfig.__dataclass_fields__.items()}
        values = declare_parameters(self, defaults)
        if values["robot_type"] not in ROBOT_TYPES:
            raise ParameterError(
                f"parameter 'robot_type' must be one of {ROBOT_TYPES}, got {values['robot_type']!r}"
            )
        for name in ("control_rate_hz", "diagnostics_rate_hz"):
            if not values[name] > 0:
                raise ParameterError(f"parameter '{name}' must be > 0, got {values[name]}")
        return values

    # ------------------------------------------------------------------------------------------ callbacks
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_command(self, msg: JointTrajectory) -> None:
        stamp = Time.from_msg(msg.header.stamp).nanoseconds * 1e-9
        points = [
            (p.time_from_start.sec + p.time_from_start.nanosec * 1e-9, list(p.positions)) for p in msg.points
        ]
        try:
            self.controller.command(self._now(), list(msg.joint_names), points, start_time=stamp or None)
        except CommandError as exc:
            self.get_logger().error(f"/joint_commands rejected: {exc}", throttle_duration_sec=1.0)

    def _on_torque(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        ok, message = self.controller.enable_torque() if request.data else self.controller.disable_torque()
        response.success, response.message = ok, message
        (self.get_logger().info if ok else self.get_logger().error)(
            f"torque {'on' if request.data else 'off'}: {message}"
        )
        return response

    # ----------------------------------------------------------------------------------------- the loop
    def _loop(self) -> None:
        controller = self.controller
        if controller.connect():
            if controller.calibration_problems:
                self.get_logger().error(
                    "calibration mismatch, torque stays off: "
                    + "; ".join(controller.calibration_problems)
                    + ". "
                    + controller.calibration_fix_hint()
                )
            elif self.enable_on_start:
                self._on_torque(SetBool.Request(data=True), SetBool.Response())
        else:
            self.get_logger().error(f"servo bus not available, retrying: {controller.connect_error}")
        next_cycle = time.monotonic()
        next_diag = next_cycle
        while not self._stop.is_set():
            started = time.monotonic()
            result = controller.step(self._now())
            self._publish(result)
            for event in controller.drain_events():
                self.get_logger().warning(event)
            if started >= next_diag:
                next_diag = started + self.diagnostics_period
                self.diag_pub.publish(
                    to_diagnostic_array(
                        self.get_clock().now().to_msg(), controller.reports("arm"), self.bus.port_name
                    )
                )
            self.cycle_times.append(time.monotonic() - started)
            del self.cycle_times[:-1000]
            next_cycle += self.period
            delay = next_cycle - time.monotonic()
            if (
                delay < -self.period
            ):  # overran by more than a cycle (e.g. bus timeouts): don't try to catch up
                next_cycle = time.monotonic()
            elif delay > 0:
                self._stop.wait(delay)

    def _publish(self, result: CycleResult) -> None:
        stamp = self.get_clock().now().to_msg()
        if result.positions is not None:
            self.state_pub.publish(joint_state(stamp, result, result.positions, self.joint_names))
        if result.goals is not None:
            self.commanded_pub.publish(joint_state(stamp, result, result.goals, self.joint_names))

    def stop(self) -> None:
        """Stop the control loop and release the arm (torque off unless configured to hold)."""
        if not hasattr(self, "_thread"):
            return  # construction failed before the bus was opened: nothing to release
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.controller.shutdown(torque_off=self.torque_off_on_shutdown)

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
