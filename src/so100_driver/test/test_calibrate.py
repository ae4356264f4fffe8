"""Calibrate command against the emulator with a scripted operator (real scservo_sdk over a real pty)."""

import json

import pytest

from smolvla_common.calibration import load_calibration
from so100_driver.arm import ArmLink, Joint
from so100_driver.bus import FeetechBus
from so100_driver.calibrate import PROMPT_MIDDLE, PROMPT_USE_FILE, main
from so100_driver.emulator.bus_emulator import BusEmulator

NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
MIDDLE_ENCODER = {1: 2100, 2: 1000, 3: 3000, 4: 2500, 5: 1800, 6: 1500}  # pose at "middle", no offset
SWEEP = {1: (-1200, 1300), 2: (-1000, 1150), 3: (-1100, 900), 4: (-1050, 1100), 6: (-30, 1400)}


class ScriptedOperator:
    """Plays the person at the arm: answers prompts and moves the emulated joints by hand."""

    def __init__(self, emu, answers=None, steps=4):
        self.emu = emu
        self.answers = dict(answers or {})
        self.prompts = []
        self.steps = steps
        self.schedule = []
        self.tables = []

    def ask(self, prompt):
        self.prompts.append(prompt)
        if prompt == PROMPT_MIDDLE:
            for servo_id, encoder in MIDDLE_ENCODER.items():
                self.emu.servo(servo_id).set_encoder_position(encoder)
        return self.answers.get(prompt, "")

    def begin_recording(self, prompt):
        self.prompts.append(prompt)
        # one joint after the other: to its low end, to its high end, back to the middle
        for servo_id, (low, high) in SWEEP.items():
            for k in range(self.steps + 1):
                self.schedule.append((servo_id, 2047 + low * k / self.steps))
            for k in range(2 * self.steps + 1):
                self.schedule.append((servo_id, 2047 + low + (high - low) * k / (2 * self.steps)))
            self.schedule.append((servo_id, 2047))

    def done(self):
        if not self.schedule:
            return True
        servo_id, present = self.schedule.pop(0)
        self.emu.servo(servo_id).set_physical_position(present)
        return False

    def show(self, table):
        self.tables.append(table)


@pytest.fixture
def emu():
    with BusEmulator(ids=range(1, 7)) as emulator:  # factory servos: offset 0, limits 0..4095
        yield emulator


def test_calibration_writes_lerobot_file_and_eeprom(emu, tmp_path):
    path = tmp_path / "robots" / "so_follower" / "arm.json"
    operator = ScriptedOperator(emu)
    assert main(["--poll-ms", "1", "--port", emu.port, "--file", str(path)], operator=operator) == 0
    assert operator.prompts[0] == PROMPT_MIDDLE and "wrist_roll" in operator.prompts[1]
    data = json.loads(path.read_text())
    assert list(data) == NAMES
    for name, servo_id in zip(NAMES, range(1, 7), strict=True):
        entry = data[name]
        assert set(entry) == {"id", "drive_mode", "homing_offset", "range_min", "range_max"}
        assert entry["id"] == servo_id and entry["drive_mode"] == 0
        assert entry["homing_offset"] == MIDDLE_ENCODER[servo_id] - 2047
        if name == "wrist_roll":
            assert (entry["range_min"], entry["range_max"]) == (0, 4095)
        else:
            low, high = SWEEP[servo_id]
            assert (entry["range_min"], entry["range_max"]) == (2047 + low, 2047 + high)
        servo = emu.servo(servo_id)
        assert servo.get("Homing_Offset") == entry["homing_offset"]
        assert servo.get("Min_Position_Limit") == entry["range_min"]
        assert servo.get("Max_Position_Limit") == entry["range_max"]
    # the file is LeRobot's format (json.dump indent 4, no trailing newline) and the node accepts the arm
    assert path.read_text() == json.dumps(data, indent=4)
    calibration = load_calibration(path)
    joints = [
        Joint(n, m.id, m.range_min, m.range_max, m.homing_offset) for n, m in calibration.motors.items()
    ]
    with FeetechBus(emu.port) as bus:
        assert ArmLink(bus, joints).check_calibration() == []
    assert operator.tables  # the live table was shown


def test_existing_file_is_written_to_the_servos_on_enter(emu, tmp_path):
    path = tmp_path / "arm.json"
    main(["--poll-ms", "1", "--port", emu.port, "--file", str(path)], operator=ScriptedOperator(emu))
    before = path.read_text()
    emu.servo(2).set("Homing_Offset", 0)  # e.g. the servo was swapped or reset
    emu.servo(2).set("Max_Position_Limit", 4095)
    operator = ScriptedOperator(emu)
    assert main(["--poll-ms", "1", "--port", emu.port, "--file", str(path)], operator=operator) == 0
    assert operator.prompts == [PROMPT_USE_FILE]
    assert path.read_text() == before
    entry = json.loads(before)["shoulder_lift"]
    assert emu.servo(2).get("Homing_Offset") == entry["homing_offset"]
    assert emu.servo(2).get("Max_Position_Limit") == entry["range_max"]


def test_write_only_flag(emu, tmp_path):
    path = tmp_path / "arm.json"
    main(["--poll-ms", "1", "--port", emu.port, "--file", str(path)], operator=ScriptedOperator(emu))
    emu.servo(4).set("Min_Position_Limit", 0)
    assert main(["--poll-ms", "1", "--port", emu.port, "--file", str(path), "--write-only"]) == 0
    assert emu.servo(4).get("Min_Position_Limit") == json.loads(path.read_text())["wrist_flex"]["range_min"]


def test_joint_at_the_encoder_seam_gives_a_clear_error(emu, tmp_path, capsys):
    operator = ScriptedOperator(emu)
    middle_at_seam = dict(MIDDLE_ENCODER)
    middle_at_seam[5] = 4095
    operator.ask = lambda prompt: (
        [emu.servo(i).set_encoder_position(e) for i, e in middle_at_seam.items()] and ""
    )
    path = tmp_path / "arm.json"
    assert main(["--poll-ms", "1", "--port", emu.port, "--file", str(path)], operator=operator) == 1
    err = capsys.readouterr().err
    assert "wrist_roll" in err and "seam" in err
    assert not path.exists()


def test_joint_that_did_not_move_is_named(emu, tmp_path, capsys):
    operator = ScriptedOperator(emu)
    operator.begin_recording = lambda prompt: None  # the operator presses ENTER without moving anything
    assert (
        main(["--poll-ms", "1", "--port", emu.port, "--file", str(tmp_path / "arm.json")], operator=operator)
        == 1
    )
    assert "did not move" in capsys.readouterr().err
