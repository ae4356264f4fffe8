"""The arm-safety rules: protection thresholds, the servo settings written at connect, and the goal rule."""

from __future__ import annotations

from dataclasses import dataclass

from so100_driver import protocol

STRESS_BITS = protocol.ErrorBit.OVERLOAD | protocol.ErrorBit.OVERHEAT | protocol.ErrorBit.OVERCURRENT
FATAL_BITS = protocol.ErrorBit.ANGLE


@dataclass
class SafetyConfig:
    """Protection thresholds. Loads in % of max torque, temperatures in deg C, times in seconds."""

    max_step: float = 0.1  # rad: no goal is written farther than this from the measured position
    max_velocity: float = 3.0  # rad/s: how fast a goal may move towards its target
    overload_load_percent: float = 80.0
    overload_backoff_s: float = 0.3  # sustained overload before backing off
    hard_fault_s: float = 2.0  # still stressed this long after backing off -> torque off
    recover_s: float = 1.0  # calm this long -> the joint accepts commands again
    temperature_warn_c: float = 55.0
    temperature_backoff_c: float = 60.0
    temperature_hard_c: float = 65.0
    gripper_stall_current_ma: float = 1000.0
    gripper_stall_error_rad: float = 0.08
    gripper_stall_s: float = 0.5
    gripper_torque_limit: int = 500  # 0.1 % units (Max_Torque_Limit/Torque_Limit)
    gripper_protection_current: int = 250  # 6.5 mA units
    silent_fault_s: float = 0.5  # a servo silent this long while torque is on -> torque off
    reconnect_period_s: float = 0.5
    stall_torque_nm: float = 2.94  # effort = load fraction * this (STS3215 12 V: 30 kg.cm)


# Registers written at connect (LeRobot's configure()); EEPROM ones only when they differ.
SERVO_SETTINGS: dict[str, int] = {
    "Return_Delay_Time": 0,
    "Operating_Mode": 0,
    "P_Coefficient": 16,
    "I_Coefficient": 0,
    "D_Coefficient": 32,
    "Maximum_Acceleration": 254,
}


def next_goal(
    previous: float, target: float, measured: float, lower: float, upper: float, step: float, max_step: float
) -> float | None:
    """The goal to write for one joint this cycle, or None to leave the servo's goal as it is.

    The goal moves from ``previous`` towards ``target`` (clamped to ``[lower, upper]``) by at most
    ``step``, and always ends within ``max_step`` of ``measured``: a joint held back (an obstacle, a load,
    a hand) is never pushed harder than at ``max_step`` of error, and its goal follows it back. None when
    the goal does not change, or when no goal inside the range is within ``max_step`` of the joint (it
    was forced out of its range: the servo keeps the goal it has).
    """
    target = min(max(target, lower), upper)
    goal = previous + min(max(target - previous, -step), step)
    goal = min(max(goal, measured - max_step), measured + max_step)
    if goal == previous or not lower <= goal <= upper:
        return None
    return goal
