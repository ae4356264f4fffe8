"""LeRobot calibration files, unit conversions and the EEPROM check, against hand-computed values and
against the emulator's ground truth read through the real scservo_sdk over a pty."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scservo_sdk as scs

from so100_driver import calibration as cal
from so100_driver.emulator import SO101_MOTOR_NAMES, BusEmulator
from so100_driver.emulator.sdk_client import TolerantPortHandler
from so100_driver.protocol import CONTROL_TABLE, decode_register, encode_register

STEP_RAD = 2 * math.pi / 4095

# Exactly what LeRobot 0.4.x writes (json.dump of the asdict()s with indent=4, no trailing newline).
LEROBOT_FILE = """{
    "shoulder_pan": {
        "id": 1,
        "drive_mode": 0,
        "homing_offset": -38,
        "range_min": 742,
        "range_max": 3377
    },
    "shoulder_lift": {
        "id": 2,
        "drive_mode": 0,
        "homing_offset": 1124,
        "range_min": 830,
        "range_max": 3250
    },
    "elbow_flex": {
        "id": 3,
        "drive_mode": 0,
        "homing_offset": -977,
        "range_min": 853,
        "range_max": 3087
    },
    "wrist_flex": {
        "id": 4,
        "drive_mode": 0,
        "homing_offset": -612,
        "range_min": 871,
        "range_max": 3204
    },
    "wrist_roll": {
        "id": 5,
        "drive_mode": 0,
        "homing_offset": 307,
        "range_min": 0,
        "range_max": 4095
    },
    "gripper": {
        "id": 6,
        "drive_mode": 0,
        "homing_offset": 1389,
        "range_min": 2021,
        "range_max": 3463
    }
}"""

DEADLINE_MS = 150.0  # reply deadline: generous, the test machine may be loaded


def simple_calibration(drive_mode: int = 0) -> cal.ArmCalibration:
    return cal.ArmCalibration(
        {
            "elbow_flex": cal.MotorCalibration(3, drive_mode, 0, 1000, 3000),
            "gripper": cal.MotorCalibration(6, drive_mode, 0, 2000, 3400),
        }
    )


@pytest.fixture
def lerobot_file(tmp_path):
    path = tmp_path / "robots" / "so_follower" / "my_arm.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(LEROBOT_FILE.encode())
    return path


# ---------------------------------------------------------------------- files
def test_lerobot_file_round_trips_byte_for_byte(lerobot_file, tmp_path):
    loaded = cal.load_calibration(lerobot_file)
    assert loaded.names == list(SO101_MOTOR_NAMES)
    assert loaded.motor("wrist_flex") == cal.MotorCalibration(4, 0, -612, 871, 3204)
    out = cal.save_calibration(loaded, tmp_path / "copy.json")
    assert out.read_bytes() == lerobot_file.read_bytes()
    # and our own writer produces LeRobot's formatting from scratch
    assert json.dumps(json.loads(LEROBOT_FILE), indent=4) == loaded.to_json()


def test_trailing_newline_is_preserved(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(LEROBOT_FILE + "\n")
    cal.save_calibration(cal.load_calibration(path), tmp_path / "b.json")
    assert (tmp_path / "b.json").read_text() == LEROBOT_FILE + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"homing_offset": [1, 2], "motor_names": ["a", "b"]}', "legacy"),
        (
            '{"m": {"id": 1, "drive_mode": 0, "homing_offset": 0, "range_min": 5}}',
            "missing fields \\['range_max'\\]",
        ),
        (
            '{"m": {"id": 1, "drive_mode": 0, "homing_offset": 0, "range_min": 9, "range_max": 9}}',
            "range_min 9",
        ),
        ('{"m": {"id": 1, "drive_mode": 0, "homing_offset": 2100, "range_min": 0, "range_max": 9}}', "2047"),
        (
            '{"a": {"id": 1, "drive_mode": 0, "homing_offset": 0, "range_min": 0, "range_max": 9},'
            ' "b": {"id": 1, "drive_mode": 0, "homing_offset": 0, "range_min": 0, "range_max": 9}}',
            "share id 1",
        ),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        cal.load_calibration(path)
    assert str(path) in str(info.value)


def test_missing_file_error_says_where_to_look(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cal.load_calibration(tmp_path / "nope.json")


def test_find_calibration_file_accepts_old_and_new_layouts(tmp_path):
    old = tmp_path / "robots" / "so101_follower" / "arm7.json"
    old.parent.mkdir(parents=True)
    old.write_text(LEROBOT_FILE)
    assert cal.find_calibration_file("arm7", root=tmp_path) == old
    with pytest.raises(FileNotFoundError, match="so_leader"):
        cal.find_calibration_file("arm7", leader=True, root=tmp_path)


def test_default_root_follows_lerobot_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_LEROBOT_CALIBRATION", raising=False)
    monkeypatch.setenv("HF_LEROBOT_HOME", str(tmp_path))
    assert cal.default_calibration_root() == tmp_path / "calibration"
    monkeypatch.setenv("HF_LEROBOT_CALIBRATION", str(tmp_path / "x"))
    assert cal.default_calibration_root() == tmp_path / "x"


# ---------------------------------------------------------------------- conversions
def test_radians_zero_at_mid_range_and_quarter_turn():
    c = simple_calibration()
    np.testing.assert_allclose(cal.raw_to_radians([2000, 2700], c), [0.0, 0.0])
    np.testing.assert_allclose(cal.raw_to_radians([3023.75, 2700 - 1023.75], c), [math.pi / 2, -math.pi / 2])
    np.testing.assert_array_equal(cal.radians_to_raw([math.pi / 2, 0.0], c), [3024, 2700])
    np.testing.assert_array_equal(cal.radians_to_raw([math.pi, -math.pi], c, clamp=True), [3000, 2000])
    low, high = c.range_radians()
    np.testing.assert_allclose(low, [-1000 * STEP_RAD, -700 * STEP_RAD])
    np.testing.assert_allclose(high, [1000 * STEP_RAD, 700 * STEP_RAD])
    np.testing.assert_allclose(cal.clamp_radians([5.0, -5.0], c), [1000 * STEP_RAD, -700 * STEP_RAD])


def test_drive_mode_inverts_radians_and_range_mode_but_not_degrees():
    c = simple_calibration(drive_mode=1)
    np.testing.assert_allclose(cal.raw_to_radians([3023.75, 2700], c), [-math.pi / 2, 0.0])
    np.testing.assert_array_equal(cal.radians_to_raw([-math.pi / 2, 0.0], c), [3024, 2700])
    low, high = c.range_radians()
    assert np.all(low < high)
    np.testing.assert_allclose(cal.raw_to_range([1500, 2350], c), [50.0, 75.0])
    np.testing.assert_allclose(cal.raw_to_degrees([3023.75, 2700], c), [90.0, 0.0])


def test_lerobot_degrees_match_lerobot_formulas():
    c = simple_calibration()
    np.testing.assert_allclose(
        cal.raw_to_degrees([[2000, 2700], [3023.75, 0]], c), [[0, 0], [90, -2700 * 360 / 4095]]
    )
    # write back truncates like int(): 90 deg -> int(3023.75) = 3023; no clamping in degree mode
    np.testing.assert_array_equal(
        cal.degrees_to_raw([90.0, -180.0], c), [3023, int(-180 * 4095 / 360 + 2700)]
    )


def test_lerobot_range_mode_clamps_and_gripper_is_0_to_100():
    c = simple_calibration()
    np.testing.assert_allclose(cal.raw_to_range([1500, 2700], c), [-50.0, 50.0])
    np.testing.assert_allclose(cal.raw_to_range([500, 4000], c), [-100.0, 100.0])  # clamped
    np.testing.assert_array_equal(cal.range_to_raw([-50.0, 50.0], c), [1500, 2700])
    np.testing.assert_array_equal(cal.range_to_raw([250.0, -3.0], c), [3000, 2000])
    # degree mode keeps the gripper in 0..100
    np.testing.assert_allclose(cal.raw_to_lerobot([3023.75, 2700], c, use_degrees=True), [90.0, 50.0])
    np.testing.assert_array_equal(cal.lerobot_to_raw([90.0, 50.0], c, use_degrees=True), [3023, 2700])
    np.testing.assert_allclose(cal.raw_to_lerobot([1500, 2700], c, use_degrees=False), [-50.0, 50.0])


def test_policy_side_conversions_are_inverse():
    c = cal.ArmCalibration.from_json(LEROBOT_FILE)
    low, high = c.range_radians()
    rng = np.random.default_rng(0)
    rad = rng.uniform(low, high, size=(50, 6))
    for use_degrees in (True, False):
        values = cal.radians_to_lerobot(rad, c, use_degrees=use_degrees)
        np.testing.assert_allclose(cal.lerobot_to_radians(values, c, use_degrees=use_degrees), rad, atol=1e-9)
    degrees = cal.radians_to_lerobot(rad, c, use_degrees=True)
    np.testing.assert_allclose(degrees[:, :5], np.degrees(rad[:, :5]), atol=1e-9)  # same zero, same scale


def test_half_turn_homing_and_seam_error():
    assert cal.homing_offsets_for_middle({"a": 2047, "b": 100, "c": 4000}) == {"a": 0, "b": -1947, "c": 1953}
    with pytest.raises(ValueError, match=r"wrist_roll.*seam"):
        cal.homing_offsets_for_middle({"wrist_roll": 4095 + 1})


# ---------------------------------------------------------------------- against the emulator
def _read(ph, port, servo_id, name):
    reg = CONTROL_TABLE[name]
    data, comm, _ = ph.readTxRx(port, servo_id, reg.address, reg.size)
    assert comm == scs.COMM_SUCCESS
    return decode_register(reg, data)


def test_published_positions_match_ground_truth_within_one_step(lerobot_file):
    c = cal.load_calibration(lerobot_file)
    with BusEmulator(calibration=lerobot_file) as emu:
        port = TolerantPortHandler(emu.port, DEADLINE_MS)
        assert port.openPort()
        ph = scs.PacketHandler(0)
        reader = scs.GroupSyncRead(port, ph, 56, 2)
        for servo_id in c.ids:
            reader.addParam(servo_id)
        rng = np.random.default_rng(1)
        try:
            for _ in range(10):
                truth_raw = rng.uniform(c.mins() + 1, c.maxs() - 1)
                for servo_id, raw in zip(c.ids, truth_raw, strict=True):
                    emu.servo(servo_id).set_physical_position(raw)  # the operator moves the limp arm
                assert reader.txRxPacket() == scs.COMM_SUCCESS
                raw = np.array([reader.getData(i, 56, 2) for i in c.ids])
                published = cal.raw_to_radians(raw, c)
                truth = cal.raw_to_radians([emu.servo(i).angle_raw for i in c.ids], c)
                assert np.max(np.abs(published - truth)) <= STEP_RAD
            # and commanded radians land within one step
            goal = cal.clamp_radians(rng.uniform(-1.0, 1.0, 6), c)
            writer = scs.GroupSyncWrite(port, ph, 42, 2)
            for servo_id, raw_goal in zip(c.ids, cal.radians_to_raw(goal, c), strict=True):
                assert ph.write1ByteTxRx(port, servo_id, 40, 1)[0] == scs.COMM_SUCCESS
                writer.addParam(servo_id, list(encode_register(CONTROL_TABLE["Goal_Position"], raw_goal)))
            assert writer.txPacket() == scs.COMM_SUCCESS
            assert emu.wait_idle()  # the sync write has no reply: let the emulator take it first
            emu.advance(3.0)
            reached = cal.raw_to_radians([emu.servo(i).angle_raw for i in c.ids], c)
            assert np.max(np.abs(reached - goal)) <= STEP_RAD
        finally:
            port.closePort()


def test_eeprom_comparison_names_what_differs(lerobot_file):
    c = cal.load_calibration(lerobot_file)
    with BusEmulator(calibration=lerobot_file) as emu:
        port = TolerantPortHandler(emu.port, DEADLINE_MS)
        assert port.openPort()
        ph = scs.PacketHandler(0)
        try:
            eeprom = {
                i: {
                    reg: _read(ph, port, i, reg)
                    for reg in ("Homing_Offset", "Min_Position_Limit", "Max_Position_Limit")
                }
                for i in c.ids
            }
        finally:
            port.closePort()
    assert eeprom == c.to_eeprom()
    assert cal.compare_with_servos(c, eeprom) == []
    other = cal.ArmCalibration.from_json(LEROBOT_FILE.replace('"homing_offset": -612', '"homing_offset": 37'))
    del eeprom[6]
    problems = cal.compare_with_servos(other, eeprom, file_hint="follower.json")
    assert problems == [
        "motor wrist_flex (id 4): Homing_Offset in servo EEPROM is -612, follower.json says 37 — "
        "re-run so100-calibrate, or point calibration_file at the right file",
        "motor gripper (id 6): no EEPROM reading (servo missing or not answering)",
    ]


def test_lerobot_procedure_on_the_emulator_survives_a_power_cycle():
    """LeRobot's half-turn homing + range recording, done by hand over the SDK with a scripted operator:
    the EEPROM written with Lock = 0 matches the resulting file after the servos lose power."""
    names = ["shoulder_pan", "gripper"]
    ids = [1, 6]
    middle_encoder = {1: 3500, 6: 600}  # where the operator holds each joint (raw encoder)
    sweep = {1: (-900, 850), 6: (-5, 1400)}  # travel around the middle pose, in steps
    with BusEmulator(ids=ids) as emu:
        port = TolerantPortHandler(emu.port, DEADLINE_MS)
        assert port.openPort()
        ph = scs.PacketHandler(0)

        def write(servo_id, name, value):
            reg = CONTROL_TABLE[name]
            data = list(encode_register(reg, value))
            assert ph.writeTxRx(port, servo_id, reg.address, reg.size, data) == (scs.COMM_SUCCESS, 0)

        try:
            for servo_id in ids:  # torque off, unlock, reset calibration
                write(servo_id, "Torque_Enable", 0)
                write(servo_id, "Lock", 0)
                for name, value in (
                    ("Homing_Offset", 0),
                    ("Min_Position_Limit", 0),
                    ("Max_Position_Limit", 4095),
                ):
                    write(servo_id, name, value)
                emu.servo(servo_id).set_encoder_position(middle_encoder[servo_id])
            raw = {n: _read(ph, port, i, "Present_Position") for n, i in zip(names, ids, strict=True)}
            offsets = cal.homing_offsets_for_middle(raw)
            for name, servo_id in zip(names, ids, strict=True):
                write(servo_id, "Homing_Offset", offsets[name])
                assert _read(ph, port, servo_id, "Present_Position") == 2047
            ranges = {}
            for name, servo_id in zip(names, ids, strict=True):
                seen = []
                for delta in np.linspace(*sweep[servo_id], 25):
                    emu.servo(servo_id).set_physical_position(2047 + delta)
                    seen.append(_read(ph, port, servo_id, "Present_Position"))
                ranges[name] = (min(seen), max(seen))
            result = cal.ArmCalibration(
                {
                    n: cal.MotorCalibration(i, 0, offsets[n], *ranges[n])
                    for n, i in zip(names, ids, strict=True)
                }
            )
            for servo_id, registers in result.to_eeprom().items():
                for name, value in registers.items():
                    write(servo_id, name, value)
                write(servo_id, "Lock", 1)
            emu.power_cycle()
            eeprom = {
                i: {
                    r: _read(ph, port, i, r)
                    for r in ("Homing_Offset", "Min_Position_Limit", "Max_Position_Limit")
                }
                for i in ids
            }
        finally:
            port.closePort()
    assert cal.compare_with_servos(result, eeprom) == []
    assert result.motor("shoulder_pan") == cal.MotorCalibration(1, 0, 3500 - 2047, 2047 - 900, 2047 + 850)
    assert result.motor("gripper").homing_offset == 600 - 2047
