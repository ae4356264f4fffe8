"""One joint of an SO-10x arm: its servo id and its LeRobot calibration, with the unit conversions."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from smolvla_common.calibration import MotorCalibration


@dataclass(frozen=True)
class Joint:
    """One joint: servo id and the calibration of that servo (LeRobot calibration fields).

    Units are those of :mod:`smolvla_common.calibration` (radians, zero at mid-range); the conversions
    are the calibration's own, through :attr:`motor`.
    """

    name: str
    servo_id: int
    range_min: int
    range_max: int
    homing_offset: int = 0
    drive_mode: int = 0
    is_gripper: bool = False

    @cached_property
    def motor(self) -> MotorCalibration:
        return MotorCalibration(
            self.servo_id, self.drive_mode, self.homing_offset, self.range_min, self.range_max
        )

    def to_rad(self, raw: float) -> float:
        return self.motor.to_radians(raw)

    def to_raw(self, rad: float) -> int:
        """The nearest goal step inside the calibrated range."""
        return self.motor.to_raw(rad)

    @cached_property
    def lower(self) -> float:
        return self.motor.range_radians()[0]

    @cached_property
    def upper(self) -> float:
        return self.motor.range_radians()[1]
