"""Wiring shared by the arm and leader nodes: joints from parameters, the bus opened exclusively, and the
JointState and diagnostics messages of a control cycle."""

from __future__ import annotations

from collections.abc import Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import JointState

from smolvla_common.calibration import load_calibration
from smolvla_common.joints import SO101_JOINTS, SO101_MOTOR_IDS
from smolvla_common.parameters import ParameterError, invalid
from so100_driver.arm.joint import Joint
from so100_driver.arm.link import CycleResult, StatusReport
from so100_driver.bus import BusError, BusPortBusyError, FeetechBus

#: Parameters both arm nodes have.
BUS_PARAMETERS = {
    "calibration_file": "",
    "joint_names": list(SO101_JOINTS),
    "motor_ids": list(SO101_MOTOR_IDS),
    "baudrate": 1_000_000,
    "diagnostics_rate_hz": 2.0,
    "bus_timeout_ms": 30.0,
    "bus_retries": 2,
}


def load_joints(calibration_file: str, names: Sequence[str], ids: Sequence[int], gripper: str) -> list[Joint]:
    """Joints from a LeRobot calibration file, keyed by joint name; clear errors for every mismatch."""
    if not calibration_file:
        raise invalid("calibration_file", "the path of this arm's LeRobot calibration JSON", calibration_file)
    if len(names) != len(ids):
        raise invalid("motor_ids", f"one id per joint in joint_names ({len(names)})", list(ids))
    if gripper and gripper not in names:
        raise invalid("gripper_joint", f"one of joint_names {list(names)} (or empty)", gripper)
    try:
        motors = load_calibration(calibration_file).motors
    except (OSError, ValueError) as exc:
        raise ParameterError(
            f"parameter 'calibration_file': cannot load {calibration_file!r}: {exc}"
        ) from None
    joints = []
    for name, servo_id in zip(names, ids, strict=True):
        if name not in motors:
            raise invalid("joint_names", f"names of the calibration file's motors {sorted(motors)}", name)
        motor = motors[name]
        if motor.id != servo_id:
            raise invalid("motor_ids", f"{motor.id} for {name!r}, as in the calibration file", servo_id)
        m = motor
        joints.append(
            Joint(name, servo_id, m.range_min, m.range_max, m.homing_offset, m.drive_mode, name == gripper)
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
