"""Follower arm node: thin ROS wiring around :class:`so100_driver.arm_controller.ArmController`.

The control loop runs on its own thread, paced by the monotonic clock (the bus is hardware); trajectory
times and message stamps use the node clock, so ``use_sim_time`` works. Publishes ``/joint_states``,
``~/commanded`` (the goals the servos hold, rad), ``~/status`` (smolvla_msgs/ArmStatus: state and safety
epoch, latched) and ``/diagnostics``; subscribes ``/joint_commands`` (stamped; commands stamped before the
latest torque-on are ignored); serves ``~/torque`` (std_srvs/SetBool).
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
from rclpy.qos import DurabilityPolicy, QoSProfile
from rclpy.time import Time
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from smolvla_msgs.msg import ArmStatus
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
from so100_driver.bus import BusError, BusPortBusyError, FeetechBus
from so100_driver.node_main import run_node

DEFAULT_JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
DEFAULT_IDS = [1, 2, 3, 4, 5, 6]
ROBOT_TYPES = ("so100", "so101")
#: Latched: a node that starts later (the executor) gets the arm's current state at once.
STATUS_QOS = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
ARM_STATUS_STATES = {
    ArmState.DISCONNECTED: ArmStatus.STATE_DISCONNECTED,
    ArmState.IDLE: ArmStatus.STATE_IDLE,
    ArmState.ENABLED: ArmStatus.STATE_ENABLED,
    ArmState.FAULT: ArmStatus.STATE_FAULT,
}


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


def open_exclusively(bus: FeetechBus) -> None:
    """Open the bus at start: a port held by another program refuses the node (a ParameterError naming
    the 'port' parameter) before it sends a byte; a device not plugged in yet is retried by the loop."""
    try:
        bus.open()
    except BusPortBusyError as exc:
        raise ParameterError(f"parameter 'port': {exc}") from None
    except BusError:
        pass


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
    """A JointState of ``values``; velocity and effort only for measured positions, and effort only once
    every joint's load was read (an empty array means unknown, never zero)."""
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(names)
    msg.position = [float(values[n]) for n in names]
    if result.velocities is not None and values is result.positions:
        msg.velocity = [float(result.velocities[n]) for n in names]
    if result.efforts is not None and values is result.positions:
        msg.effort = [float(result.efforts[n]) for n in names]
    return msg


def arm_status(stamp, state: ArmState, epoch: int, enabled_since: float | None, message: str) -> ArmStatus:
    """The ArmStatus message; ``enabled_since`` in seconds of the node clock (None: never enabled)."""
    msg = ArmStatus(state=ARM_STATUS_STATES[state], epoch=epoch, message=message)
    msg.header.stamp = stamp
    if enabled_since is not None:
        msg.enabled_since = Time(nanoseconds=round(enabled_since * 1e9)).to_msg()
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
        for name in ("max_step", "max_velocity"):
            if not getattr(safety, name) > 0:
                raise ParameterError(f"parameter '{name}' must be > 0, got {getattr(safety, name)}")
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

        self.state_pub = self.create_publisher(JointState, "/joint_states", 10)
        self.commanded_pub = self.create_publisher(JointState, "~/commanded", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.status_pub = self.create_publisher(ArmStatus, "~/status", STATUS_QOS)
        self._last_status: tuple | None = None
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
            if stamp == 0:
                self.controller.reject(
                    "header.stamp is not set: stamp every command with the time it was issued "
                    '(ros2 topic pub: "{header: {stamp: now}, joint_names: [...], points: [...]}")'
                )
            self.controller.command(self._now(), list(msg.joint_names), points, start_time=stamp)
        except CommandError as exc:
            self.get_logger().error(f"/joint_commands rejected: {exc}", throttle_duration_sec=1.0)

    def _on_torque(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data:
            ok, message = self.controller.enable_torque(self._now())
        else:
            ok, message = self.controller.disable_torque()
        response.success, response.message = ok, message
        text = f"torque {'on' if request.data else 'off'}: {message}"
        if ok:  # one call site per severity: rclpy refuses to change a call site's severity
            self.get_logger().info(text)
        else:
            self.get_logger().error(text)
        self._publish_status()
        return response

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
        self.status_pub.publish(arm_status(self.get_clock().now().to_msg(), state, epoch, since, message))

    # ----------------------------------------------------------------------------------------- the loop
    def _loop(self) -> None:
        controller = self.controller
        if controller.connect(self._now()):
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
        self._publish_status(periodic=True)
        next_cycle = time.monotonic()
        next_diag = next_cycle
        while not self._stop.is_set():
            started = time.monotonic()
            result = controller.step(self._now())
            self._publish(result)
            for event in controller.drain_events():
                self.get_logger().warning(event)
            periodic = started >= next_diag
            self._publish_status(periodic)
            if periodic:
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
