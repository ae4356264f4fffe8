"""Interactive calibration of an SO-100/SO-101 arm, equivalent to LeRobot's ``calibrate()``.

Procedure (the same steps and the same file as LeRobot 0.4.x):

1. If a calibration file exists: ENTER writes it to the servos, ``c`` + ENTER recalibrates.
2. Torque off and position mode on every servo.
3. The operator puts every joint in the middle of its range and presses ENTER; the homing offset
   ``raw - 2047`` is written so that this pose reads 2047 (half-turn homing).
4. The operator sweeps every joint except wrist_roll through its whole range while the present positions
   are read live; ENTER stops. wrist_roll gets the full turn 0..4095.
5. Offsets and ranges go to the servos' EEPROM (the firmware then clamps goals to the range) and to the
   LeRobot calibration JSON.

The operator is an object (:class:`ConsoleOperator` for people, a scripted one in tests), so the whole
procedure runs against the emulator with the real SDK.

Usage: ``so100-calibrate --port /dev/ttyACM0 --file ~/my_arm.json`` (or ``--id my_arm [--role leader]`` for
LeRobot's default location); ``--write-only`` writes an existing file to the servos without prompting.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from smolvla_common.calibration import (
    ArmCalibration,
    MotorCalibration,
    default_calibration_root,
    load_calibration,
    save_calibration,
)
from smolvla_common.joints import SO101_JOINTS, SO101_MOTOR_IDS
from so100_driver.bus import BusError, FeetechBus
from so100_driver.servo_calibration import homing_offsets_for_middle

DEFAULT_MOTORS = dict(zip(SO101_JOINTS, SO101_MOTOR_IDS, strict=True))
FULL_TURN_JOINTS = ("wrist_roll",)
PROMPT_USE_FILE = (
    "Press ENTER to write the calibration file to the motors, or type 'c' and ENTER to recalibrate: "
)
PROMPT_MIDDLE = "Move the arm to the middle of its range of motion and press ENTER...."
PROMPT_RECORD = (
    "Move all joints except {fixed} one by one through their entire ranges of motion.\n"
    "Recording positions. Press ENTER to stop..."
)


class CalibrationError(RuntimeError):
    """The procedure cannot produce a valid calibration; the message says why and what to do."""


class Operator(Protocol):
    """The person (or script) at the arm."""

    def ask(self, prompt: str) -> str:
        """Show ``prompt`` and block until ENTER; return the typed line."""

    def begin_recording(self, prompt: str) -> None:
        """Show ``prompt``; from now on :meth:`done` turns True once ENTER is pressed."""

    def done(self) -> bool:
        """Non-blocking: has the operator ended the range recording?"""

    def show(self, table: str) -> None:
        """Display the live min/position/max table."""


class ConsoleOperator:
    """Operator on a terminal: prompts with ``input()``; ENTER during recording is read on a thread."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._last_show = 0.0

    def ask(self, prompt: str) -> str:
        return input(prompt)

    def begin_recording(self, prompt: str) -> None:
        print(prompt, flush=True)
        self._stop.clear()
        threading.Thread(target=self._wait_enter, daemon=True).start()

    def _wait_enter(self) -> None:
        with contextlib.suppress(EOFError):
            input()
        self._stop.set()

    def done(self) -> bool:
        return self._stop.is_set()

    def show(self, table: str) -> None:
        now = time.monotonic()
        if now - self._last_show >= 0.25:
            self._last_show = now
            print("\x1b[2J\x1b[H" + table, flush=True)


def write_calibration(bus: FeetechBus, calibration: ArmCalibration) -> None:
    """Write offsets and limits to the servos' EEPROM (torque off, Lock 0 while writing, Lock 1 after)."""
    for motor in calibration.motors.values():
        bus.write_register(motor.id, "Torque_Enable", 0)
        bus.write_register(motor.id, "Lock", 0)
        bus.write_register(motor.id, "Homing_Offset", motor.homing_offset)
        bus.write_register(motor.id, "Min_Position_Limit", motor.range_min)
        bus.write_register(motor.id, "Max_Position_Limit", motor.range_max)
        bus.write_register(motor.id, "Lock", 1)


def _read_all(bus: FeetechBus, motors: dict[str, int]) -> dict[str, int]:
    read = bus.read_register(list(motors.values()), "Present_Position")
    if read.missing:
        names = [n for n, i in motors.items() if i in read.missing]
        raise CalibrationError(f"no answer from {names} (ids {list(read.missing)}): check power and cables")
    return {name: read.values[i] for name, i in motors.items()}


def _table(positions: dict[str, int], mins: dict[str, int], maxs: dict[str, int]) -> str:
    lines = [f"{'NAME':<15} | {'MIN':>6} | {'POS':>6} | {'MAX':>6}"]
    for name, pos in positions.items():
        lines.append(f"{name:<15} | {mins.get(name, pos):>6} | {pos:>6} | {maxs.get(name, pos):>6}")
    return "\n".join(lines)


def run_calibration(
    bus: FeetechBus,
    motors: dict[str, int],
    operator: Operator,
    existing: ArmCalibration | None = None,
    poll_period: float = 0.02,
    full_turn: Sequence[str] = FULL_TURN_JOINTS,
) -> ArmCalibration:
    """Run the procedure on ``motors`` (name -> id); returns the calibration written to the servos."""
    if existing is not None and operator.ask(PROMPT_USE_FILE).strip().lower() != "c":
        write_calibration(bus, existing)
        return existing

    for servo_id in motors.values():  # torque off, position mode, factory frame
        bus.write_register(servo_id, "Torque_Enable", 0)
        bus.write_register(servo_id, "Lock", 0)
        bus.write_register(servo_id, "Operating_Mode", 0)

    operator.ask(PROMPT_MIDDLE)
    for servo_id in motors.values():
        bus.write_register(servo_id, "Homing_Offset", 0)
        bus.write_register(servo_id, "Min_Position_Limit", 0)
        bus.write_register(servo_id, "Max_Position_Limit", 4095)
    try:
        offsets = homing_offsets_for_middle(_read_all(bus, motors))
    except ValueError as exc:
        raise CalibrationError(str(exc)) from None
    for name, servo_id in motors.items():
        bus.write_register(servo_id, "Homing_Offset", offsets[name])

    swept = {n: i for n, i in motors.items() if n not in full_turn}
    fixed = ", ".join(n for n in motors if n in full_turn) or "none"
    operator.begin_recording(PROMPT_RECORD.format(fixed=fixed))
    mins: dict[str, int] = {}
    maxs: dict[str, int] = {}
    while True:
        read = bus.read_register(list(swept.values()), "Present_Position", retries=1)
        positions = {}
        for name, servo_id in swept.items():
            if servo_id in read.values:  # a missed reply is skipped, never recorded as 0
                value = read.values[servo_id]
                positions[name] = value
                mins[name] = min(mins.get(name, value), value)
                maxs[name] = max(maxs.get(name, value), value)
        operator.show(_table(positions, mins, maxs))
        if operator.done():
            break
        time.sleep(poll_period)

    not_moved = [n for n in swept if n not in mins or mins[n] >= maxs[n]]
    if not_moved:
        raise CalibrationError(
            f"joints {not_moved} did not move during the range recording (min == max); "
            "run the calibration again and move every joint from one end of its range to the other"
        )
    calibration = ArmCalibration(
        {
            name: MotorCalibration(
                id=servo_id,
                drive_mode=0,
                homing_offset=offsets[name],
                range_min=mins.get(name, 0),
                range_max=maxs.get(name, 4095),
            )
            for name, servo_id in motors.items()
        }
    )
    write_calibration(bus, calibration)
    return calibration


def _default_path(arm_id: str, role: str) -> Path:
    folder = "teleoperators/so_leader" if role == "leader" else "robots/so_follower"
    return default_calibration_root() / folder / f"{arm_id}.json"


def main(argv: Sequence[str] | None = None, operator: Operator | None = None) -> int:
    parser = argparse.ArgumentParser(prog="so100-calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", required=True, help="serial port of the arm, e.g. /dev/ttyACM0")
    parser.add_argument("--file", help="calibration JSON to write (and to reuse if it exists)")
    parser.add_argument("--id", dest="arm_id", help="arm id: use LeRobot's default calibration location")
    parser.add_argument("--role", choices=("follower", "leader"), default="follower")
    parser.add_argument("--joint-names", nargs="+", default=list(DEFAULT_MOTORS))
    parser.add_argument("--motor-ids", nargs="+", type=int, default=list(DEFAULT_MOTORS.values()))
    parser.add_argument("--write-only", action="store_true", help="write the existing file to the servos")
    parser.add_argument("--baudrate", type=int, default=1_000_000)
    parser.add_argument("--timeout-ms", type=float, default=50.0, help="servo reply timeout (ms)")
    parser.add_argument("--poll-ms", type=float, default=20.0, help="range recording period (ms)")
    args = parser.parse_args(argv)
    if not args.file and not args.arm_id:
        parser.error("give --file PATH or --id ARM_ID")
    if len(args.joint_names) != len(args.motor_ids):
        parser.error("--joint-names and --motor-ids must have the same length")
    path = Path(args.file).expanduser() if args.file else _default_path(args.arm_id, args.role)
    existing = None
    if path.exists():
        try:
            existing = load_calibration(path)
        except ValueError as exc:
            print(f"so100-calibrate: ignoring unreadable calibration file: {exc}", file=sys.stderr)
    if args.write_only and existing is None:
        parser.error(f"--write-only needs an existing calibration file; {path} is missing or unreadable")
    motors = dict(zip(args.joint_names, args.motor_ids, strict=True))
    operator = operator or ConsoleOperator()
    try:
        with FeetechBus(
            args.port, args.baudrate, timeout_ms=args.timeout_ms, retries=3, retry_budget_ms=500
        ) as bus:
            if args.write_only:
                write_calibration(bus, existing)
                print(f"wrote {path} to the servos on {args.port}")
                return 0
            calibration = run_calibration(bus, motors, operator, existing, args.poll_ms / 1000.0)
    except (BusError, CalibrationError) as exc:
        print(f"so100-calibrate: {exc}", file=sys.stderr)
        return 1
    if calibration is not existing:
        save_calibration(calibration, path)
        print(f"calibration saved to {path}")
    else:
        print(f"wrote {path} to the servos on {args.port}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
