"""Unit conversion between ROS radians and LeRobot's degree / range modes; the units plausibility check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smolvla_common.calibration import ArmCalibration
from smolvla_policy.runtime.units import (
    DEG,
    RAD,
    RANGE_0_100,
    RANGE_M100_100,
    UnitConverter,
    UnitsError,
    check_unit_plausibility,
    joint_units_for_mode,
)

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
RANGES = {
    "shoulder_pan": (700, 3400),
    "shoulder_lift": (800, 3300),
    "elbow_flex": (850, 3100),
    "wrist_flex": (750, 3200),
    "wrist_roll": (0, 4095),
    "gripper": (1900, 3400),
}
CALIBRATION = ArmCalibration.from_dict(
    {
        name: {"id": i + 1, "drive_mode": 0, "homing_offset": 0, "range_min": lo, "range_max": hi}
        for i, (name, (lo, hi)) in enumerate(RANGES.items())
    }
)
MIDS = np.array([(lo + hi) / 2 for lo, hi in RANGES.values()])
RAD_PER_STEP = 2 * math.pi / 4095


def test_modes_keep_the_gripper_in_range_0_100():
    assert joint_units_for_mode("degrees", JOINTS) == [DEG] * 5 + [RANGE_0_100]
    assert joint_units_for_mode("lerobot_range", JOINTS) == [RANGE_M100_100] * 5 + [RANGE_0_100]
    assert joint_units_for_mode("radians", JOINTS) == [RAD] * 6
    with pytest.raises(UnitsError, match="unknown units mode 'furlongs'"):
        joint_units_for_mode("furlongs", JOINTS)


def test_degrees_match_lerobot_formula_for_raw_positions():
    """LeRobot degree mode reads (raw - mid) * 360 / 4095; ROS reads (raw - mid) * 2 pi / 4095."""
    converter = UnitConverter(JOINTS, [DEG] * 5 + [RANGE_0_100], CALIBRATION)
    raw = np.array([1000.0, 2500.0, 3000.0, 800.0, 4095.0, 2650.0])
    radians = (raw - MIDS) * RAD_PER_STEP
    out = converter.to_checkpoint(radians)
    np.testing.assert_allclose(out[:5], ((raw - MIDS) * 360 / 4095)[:5], atol=1e-9)
    assert out[5] == pytest.approx(100 * (2650 - 1900) / (3400 - 1900))


def test_range_mode_matches_lerobot_formula_and_clamps():
    converter = UnitConverter(JOINTS, [RANGE_M100_100] * 5 + [RANGE_0_100], CALIBRATION)
    raw = np.array(
        [700.0, 3300.0, 1975.0, 5000.0, 2047.5, 1900.0]
    )  # min, max, middle, beyond max, mid, closed
    out = converter.to_checkpoint((raw - MIDS) * RAD_PER_STEP)
    np.testing.assert_allclose(out, [-100.0, 100.0, 0.0, 100.0, 0.0, 0.0], atol=1e-9)


@pytest.mark.parametrize("mode", ["degrees", "range", "radians"])
def test_round_trip_inside_the_calibrated_range(mode):
    converter = UnitConverter(JOINTS, joint_units_for_mode(mode, JOINTS), CALIBRATION)
    rng = np.random.default_rng(0)
    lows = (np.array([lo for lo, _ in RANGES.values()]) - MIDS) * RAD_PER_STEP
    highs = -lows
    radians = rng.uniform(lows, highs, size=(50, 6))
    back = converter.to_radians(converter.to_checkpoint(radians))
    np.testing.assert_allclose(back, radians, atol=1e-12)


def test_range_actions_are_clamped_before_conversion():
    converter = UnitConverter(JOINTS, [RANGE_M100_100] * 5 + [RANGE_0_100], CALIBRATION)
    out = converter.to_radians(np.array([[150.0, -150.0, 0.0, 0.0, 0.0, 120.0]]))[0]
    assert out[0] == pytest.approx((3400 - MIDS[0]) * RAD_PER_STEP)
    assert out[1] == pytest.approx((800 - MIDS[1]) * RAD_PER_STEP)
    assert out[5] == pytest.approx((3400 - MIDS[5]) * RAD_PER_STEP)


def test_degrees_need_no_calibration_and_agree_with_it():
    radians = np.linspace(-1.5, 1.5, 6)
    plain = UnitConverter(JOINTS, [DEG] * 6).to_checkpoint(radians)
    calibrated = UnitConverter(JOINTS, [DEG] * 6, CALIBRATION).to_checkpoint(radians)
    np.testing.assert_allclose(plain, np.degrees(radians))
    np.testing.assert_allclose(calibrated, plain, atol=1e-9)


def test_range_units_need_calibration():
    with pytest.raises(UnitsError, match=r"joints \['gripper'\] use LeRobot range units.*calibration_file"):
        UnitConverter(JOINTS, [DEG] * 5 + [RANGE_0_100], None)


def test_plausibility_refuses_degrees_configured_as_radians():
    stats = {"mean": np.full(6, 10.0), "std": np.full(6, 30.0)}
    findings = check_unit_plausibility("observation.state", stats, JOINTS, [RAD] * 6)
    assert [f.level for f in findings] == ["error"] * 6
    assert "cannot be radians" in findings[0].message and "shoulder_pan" in findings[0].message


def test_plausibility_refuses_degrees_configured_as_range():
    stats = {
        "mean": np.zeros(6),
        "std": np.full(6, 30.0),
        "min": np.full(6, -150.0),
        "max": np.full(6, 150.0),
    }
    findings = check_unit_plausibility("action", stats, JOINTS, [RANGE_M100_100] * 5 + [RANGE_0_100])
    assert all(f.level == "error" for f in findings) and len(findings) == 6
    assert "outside LeRobot's -100..100 range mode" in findings[0].message
    assert "outside LeRobot's 0..100 range mode" in findings[5].message


def test_plausibility_warns_on_radian_like_stats_in_degree_mode():
    stats = {"mean": np.zeros(6), "std": np.full(6, 0.3), "min": np.full(6, -1.0), "max": np.full(6, 1.0)}
    findings = check_unit_plausibility("observation.state", stats, JOINTS, [DEG] * 5 + [RANGE_0_100])
    assert findings and all(f.level == "warning" for f in findings)
    assert "looks like radians" in findings[0].message


def test_plausibility_warns_on_range_like_stats_in_degree_mode():
    stats = {
        "mean": np.zeros(6),
        "std": np.full(6, 30.0),
        "min": np.array([-100.0] * 5 + [0.0]),
        "max": np.full(6, 100.0),
    }
    findings = check_unit_plausibility("observation.state", stats, JOINTS, [DEG] * 5 + [RANGE_0_100])
    assert [f.level for f in findings] == ["warning"]
    assert "looks like LeRobot's -100..100 range mode" in findings[0].message


def test_plausibility_accepts_consistent_stats():
    degrees = {
        "mean": np.array([0, -20, 30, 10, 0, 30.0]),
        "std": np.full(6, 20.0),
        "min": np.array([-90, -110, -60, -80, -150, 0.0]),
        "max": np.array([90, 60, 110, 90, 150, 80.0]),
    }
    assert check_unit_plausibility("action", degrees, JOINTS, [DEG] * 5 + [RANGE_0_100]) == []
    radians = {"mean": np.zeros(6), "std": np.full(6, 0.5), "min": np.full(6, -2.0), "max": np.full(6, 2.0)}
    assert check_unit_plausibility("action", radians, JOINTS, [RAD] * 6) == []
