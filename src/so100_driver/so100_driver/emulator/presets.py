"""Initial EEPROM and poses for emulated SO-100/SO-101 arms.

The calibration values are plausible numbers of an arm calibrated with LeRobot (half-turn homing, so every
range is centred near 2047). The EEPROM settings match what LeRobot's ``configure()`` leaves on a follower
or leader (Return_Delay_Time 0, P 16, Maximum_Acceleration 254; gripper torque/current limited to 50 %).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MotorPreset:
    """EEPROM calibration of one motor plus where the joint rests at power-up (Present_Position frame)."""

    name: str
    motor_id: int
    homing_offset: int
    range_min: int
    range_max: int
    rest: int


_FOLLOWER = (
    MotorPreset("shoulder_pan", 1, -38, 742, 3377, 2050),
    MotorPreset("shoulder_lift", 2, 1124, 830, 3250, 880),
    MotorPreset("elbow_flex", 3, -977, 853, 3087, 3030),
    MotorPreset("wrist_flex", 4, -612, 871, 3204, 2300),
    MotorPreset("wrist_roll", 5, 307, 0, 4095, 2047),
    MotorPreset("gripper", 6, 1389, 2021, 3463, 2050),
)
_LEADER = (
    MotorPreset("shoulder_pan", 1, 205, 733, 3346, 2040),
    MotorPreset("shoulder_lift", 2, -1468, 808, 3211, 850),
    MotorPreset("elbow_flex", 3, 1120, 884, 3062, 3010),
    MotorPreset("wrist_flex", 4, -1005, 901, 3178, 2200),
    MotorPreset("wrist_roll", 5, 96, 0, 4095, 2047),
    MotorPreset("gripper", 6, -1711, 1980, 3381, 2000),
)

PRESETS: dict[str, tuple[MotorPreset, ...]] = {
    "so101_follower": _FOLLOWER,
    "so100_follower": _FOLLOWER,
    "so101_leader": _LEADER,
    "so100_leader": _LEADER,
}

_CONFIGURED_BY_LEROBOT = {
    "Return_Delay_Time": 0,
    "Maximum_Acceleration": 254,
    "P_Coefficient": 16,
    "I_Coefficient": 0,
    "D_Coefficient": 32,
    "Operating_Mode": 0,
}
_GRIPPER_LIMITS = {"Max_Torque_Limit": 500, "Protection_Current": 250, "Overload_Torque": 25}


def preset_motors(name: str) -> tuple[MotorPreset, ...]:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown emulator preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def eeprom_for(motor_name: str, homing_offset: int, range_min: int, range_max: int) -> dict[str, int]:
    """EEPROM registers of a LeRobot-configured SO arm motor with the given calibration."""
    values = dict(_CONFIGURED_BY_LEROBOT)
    if motor_name == "gripper":
        values.update(_GRIPPER_LIMITS)
    values.update(Homing_Offset=homing_offset, Min_Position_Limit=range_min, Max_Position_Limit=range_max)
    return values
