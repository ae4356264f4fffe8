"""LeRobot calibration files and unit conversions against hand-computed values and LeRobot's formulas.
(The servo side, against the emulator's ground truth, is in so100_driver's test_servo_calibration.py.)"""

from __future__ import annotations

import json
import math
import stat

import numpy as np
import pytest

from lerobot_files import LEROBOT_FILE, write_lerobot_file
from smolvla_common import calibration as cal
from smolvla_common.joints import SO101_JOINTS

STEP_RAD = 2 * math.pi / 4095


def simple_calibration(drive_mode: int = 0) -> cal.ArmCalibration:
    return cal.ArmCalibration(
        {
            "elbow_flex": cal.MotorCalibration(3, drive_mode, 0, 1000, 3000),
            "gripper": cal.MotorCalibration(6, drive_mode, 0, 2000, 3400),
        }
    )


@pytest.fixture
def lerobot_file(tmp_path):
    return write_lerobot_file(tmp_path / "robots" / "so_follower" / "my_arm.json")


# ---------------------------------------------------------------------- files
def test_lerobot_file_round_trips_byte_for_byte(lerobot_file, tmp_path):
    loaded = cal.load_calibration(lerobot_file)
    assert loaded.names == list(SO101_JOINTS)
    assert loaded.motor("wrist_flex") == cal.MotorCalibration(4, 0, -612, 871, 3204)
    out = cal.save_calibration(loaded, tmp_path / "copy.json")
    assert out.read_bytes() == lerobot_file.read_bytes()
    # and our own writer produces LeRobot's formatting from scratch
    assert json.dumps(json.loads(LEROBOT_FILE), indent=4) == loaded.to_json()


def test_saved_file_is_0644_like_lerobots_and_an_existing_file_keeps_its_mode(lerobot_file, tmp_path):
    calibration = cal.load_calibration(lerobot_file)
    new = cal.save_calibration(calibration, tmp_path / "new.json")
    assert stat.S_IMODE(new.stat().st_mode) == 0o644
    existing = tmp_path / "existing.json"
    for mode in (0o644, 0o640, 0o600):
        existing.write_text("{}")
        existing.chmod(mode)
        cal.save_calibration(calibration, existing)
        assert stat.S_IMODE(existing.stat().st_mode) == mode
        assert cal.load_calibration(existing) == calibration
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


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
