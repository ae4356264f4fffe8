"""Where a LeRobot calibration lives on the servos: the EEPROM registers, the startup comparison and the
half-turn homing of the calibration procedure (the file format and unit math are in
:mod:`smolvla_common.calibration`)."""

from __future__ import annotations

from collections.abc import Mapping

from smolvla_common.calibration import MAX_HOMING_OFFSET, ArmCalibration

HALF_TURN = 2047  # LeRobot's half-turn homing puts the middle pose at this raw value
#: Calibration field -> the EEPROM register that holds it.
EEPROM_REGISTERS: dict[str, str] = {
    "homing_offset": "Homing_Offset",
    "range_min": "Min_Position_Limit",
    "range_max": "Max_Position_Limit",
}


def eeprom_values(calibration: ArmCalibration) -> dict[int, dict[str, int]]:
    """Servo id -> the EEPROM registers that hold this calibration (name -> value)."""
    return {
        m.id: {reg: getattr(m, key) for key, reg in EEPROM_REGISTERS.items()}
        for m in calibration.motors.values()
    }


def homing_offsets_for_middle(raw_positions: Mapping[str, int]) -> dict[str, int]:
    """LeRobot's half-turn homing: ``offset = raw - 2047`` so the pose held now reads 2047.

    ``raw_positions`` are Present_Position values read with Homing_Offset 0. Raises ValueError naming the
    joint when the offset does not fit the register (the joint sits near the encoder's 0/4095 seam).
    """
    offsets = {}
    for name, raw in raw_positions.items():
        offset = int(raw) - HALF_TURN
        if abs(offset) > MAX_HOMING_OFFSET:
            raise ValueError(
                f"motor {name!r}: raw position {raw} gives homing offset {offset}, "
                f"beyond ±{MAX_HOMING_OFFSET}; "
                "the joint is at the encoder's 0/4095 seam. Check the horn is mounted as in the assembly "
                "guide and that the joint is in the middle of its range, then retry"
            )
        offsets[name] = offset
    return offsets


def compare_with_servos(
    calibration: ArmCalibration,
    eeprom: Mapping[int, Mapping[str, int]],
    file_hint: str = "the calibration file",
) -> list[str]:
    """Human-readable differences between the file and the servos' EEPROM (empty when they agree).

    ``eeprom`` maps servo id -> register name (``Homing_Offset``, ``Min_Position_Limit``,
    ``Max_Position_Limit``) -> value read from the servo; a missing id or register is reported too.
    """
    problems = []
    for name, motor in calibration.motors.items():
        registers = eeprom.get(motor.id)
        if registers is None:
            problems.append(
                f"motor {name} (id {motor.id}): no EEPROM reading (servo missing or not answering)"
            )
            continue
        for key, reg in EEPROM_REGISTERS.items():
            expected = getattr(motor, key)
            actual = registers.get(reg)
            if actual is None:
                problems.append(f"motor {name} (id {motor.id}): {reg} could not be read")
            elif int(actual) != expected:
                problems.append(
                    f"motor {name} (id {motor.id}): {reg} in servo EEPROM is {int(actual)}, {file_hint} says "
                    f"{expected} — re-run so100-calibrate, or point calibration_file at the right file"
                )
    return problems
