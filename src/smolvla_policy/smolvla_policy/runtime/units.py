"""Joint units between ROS (radians, REP-103) and a checkpoint (LeRobot degrees or range modes, radians).

ROS joint positions are radians with zero at the middle of each joint's calibrated range. LeRobot's units:

- ``deg``: degree mode, ``(raw - mid) * 360 / 4095``; with ROS's ``rad = (raw - mid) * 2 pi / 4095`` this is
  exactly ``rad * 180 / pi`` and needs no calibration.
- ``range_m100_100``: body joints with ``use_degrees=False``, the calibrated range mapped to -100..100.
- ``range_0_100``: the gripper in every LeRobot mode, the calibrated range mapped to 0..100.

The range units need the joint's calibrated ``range_min``/``range_max`` (raw steps), read from a LeRobot
calibration file. The raw <-> unit math lives in ``smolvla_common.calibration``; this module only chooses the
unit per joint and checks that a checkpoint's dataset statistics look like the configured units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from smolvla_common import calibration as cal
from smolvla_common.calibration import ArmCalibration

RAD = "rad"
DEG = "deg"
RANGE_M100_100 = "range_m100_100"
RANGE_0_100 = "range_0_100"
JOINT_UNITS = (RAD, DEG, RANGE_M100_100, RANGE_0_100)
RANGE_UNITS = (RANGE_M100_100, RANGE_0_100)

# Unit modes of a whole arm, as LeRobot records them (aliases accepted).
UNIT_MODES = {
    "radians": "radians",
    "rad": "radians",
    "degrees": "degrees",
    "deg": "degrees",
    "lerobot_degrees": "degrees",
    "range": "range",
    "lerobot_range": "range",
}


class UnitsError(ValueError):
    """Units, joints and calibration do not fit together."""


def joint_units_for_mode(mode: str, joint_names: Sequence[str], gripper_joint: str = "gripper") -> list[str]:
    """Per-joint units of a unit mode: the gripper stays 0..100 in LeRobot's degree and range modes."""
    canonical = UNIT_MODES.get(mode.strip().lower())
    if canonical is None:
        raise UnitsError(f"unknown units mode {mode!r}; expected one of {sorted(set(UNIT_MODES.values()))}")
    body = {"radians": RAD, "degrees": DEG, "range": RANGE_M100_100}[canonical]
    if canonical == "radians":
        return [RAD] * len(joint_names)
    return [RANGE_0_100 if name == gripper_joint else body for name in joint_names]


def resolve_joint_units(
    mode: str,
    joint_names: Sequence[str],
    gripper_joint: str = "gripper",
    overrides: Sequence[str] | None = None,
) -> list[str]:
    """Per-joint units: ``overrides`` (the ``joint_units`` parameter) when given, else those of ``mode``."""
    if overrides:
        return [str(u).strip().lower() for u in overrides]
    return joint_units_for_mode(mode, joint_names, gripper_joint)


def parse_joint_units(text: str) -> list[str]:
    """A command line's ``--joint-units deg,deg,...``: the comma-separated entries, blanks dropped."""
    return [u.strip() for u in text.split(",") if u.strip()]


class UnitConverter:
    """Converts joint vectors between ROS radians and checkpoint units, joint by joint.

    ``calibration`` (a LeRobot calibration, ``smolvla_common.calibration.ArmCalibration``) is needed by the
    range units; with it, degrees also go through the calibration (so ``drive_mode`` is honoured exactly as
    the driver does). Without it, degrees are ``rad * 180 / pi`` (the driver's radians and LeRobot's degrees
    share their zero at mid-range and their 4095 steps per turn).
    """

    def __init__(
        self, joint_names: Sequence[str], units: Sequence[str], calibration: ArmCalibration | None = None
    ):
        if len(units) != len(joint_names):
            raise UnitsError(
                f"got {len(units)} joint units for {len(joint_names)} joints {list(joint_names)}"
            )
        bad = [u for u in units if u not in JOINT_UNITS]
        if bad:
            raise UnitsError(f"unknown joint unit(s) {bad}; expected one of {list(JOINT_UNITS)}")
        known = set(calibration.names) if calibration is not None else set()
        needs = [n for n, u in zip(joint_names, units, strict=True) if u in RANGE_UNITS and n not in known]
        if needs:
            raise UnitsError(
                f"joints {needs} use LeRobot range units ({', '.join(RANGE_UNITS)}), which need the "
                f"calibrated range of each joint: set calibration_file to the arm's LeRobot calibration JSON "
                f"(it has {sorted(known) if known else 'no'} joints)"
            )
        self.joint_names = list(joint_names)
        self.units = list(units)
        self.calibration = calibration
        self._groups = {
            unit: [j for j, u in enumerate(self.units) if u == unit]
            for unit in JOINT_UNITS
            if unit in self.units
        }

    def _names(self, indices: list[int]) -> list[str]:
        return [self.joint_names[j] for j in indices]

    def _calibrated(self, indices: list[int]) -> bool:
        return self.calibration is not None and all(n in self.calibration.names for n in self._names(indices))

    def to_checkpoint(self, radians: np.ndarray) -> np.ndarray:
        """ROS radians (..., J) -> checkpoint units (..., J). Range units clamp to the calibrated range."""
        radians = np.asarray(radians, dtype=np.float64)
        out = np.empty_like(radians)
        for unit, idx in self._groups.items():
            x = radians[..., idx]
            if unit == RAD:
                out[..., idx] = x
            elif unit == DEG and not self._calibrated(idx):
                out[..., idx] = np.degrees(x)
            else:
                out[..., idx] = cal.radians_to_lerobot(
                    x,
                    self.calibration,
                    self._names(idx),
                    use_degrees=unit == DEG,
                    gripper_names=self._grippers(unit, idx),
                )
        return out

    def to_radians(self, values: np.ndarray) -> np.ndarray:
        """Checkpoint units (..., J) -> ROS radians (..., J). Range units clamp to -100..100 / 0..100."""
        values = np.asarray(values, dtype=np.float64)
        out = np.empty_like(values)
        for unit, idx in self._groups.items():
            x = values[..., idx]
            if unit == RAD:
                out[..., idx] = x
            elif unit == DEG and not self._calibrated(idx):
                out[..., idx] = np.radians(x)
            else:
                out[..., idx] = cal.lerobot_to_radians(
                    x,
                    self.calibration,
                    self._names(idx),
                    use_degrees=unit == DEG,
                    gripper_names=self._grippers(unit, idx),
                )
        return out

    def _grippers(self, unit: str, indices: list[int]) -> list[str]:
        """The joints to treat as LeRobot's 0..100 gripper: every joint of the range_0_100 group."""
        return self._names(indices) if unit == RANGE_0_100 else []


@dataclass(frozen=True)
class UnitsFinding:
    """One result of the plausibility check: ``error`` (clearly inconsistent) or ``warning`` (suspicious)."""

    level: str
    message: str


def _extent(stats: Mapping[str, np.ndarray], j: int) -> float:
    """Largest magnitude the feature's values reach: from min/max when present, else mean +- 3 std."""
    if "min" in stats and "max" in stats:
        return float(max(abs(stats["min"][j]), abs(stats["max"][j])))
    return float(abs(stats["mean"][j]) + 3.0 * stats["std"][j])


def _bounds(stats: Mapping[str, np.ndarray], j: int) -> tuple[float, float]:
    if "min" in stats and "max" in stats:
        return float(stats["min"][j]), float(stats["max"][j])
    return float(stats["mean"][j] - 3.0 * stats["std"][j]), float(stats["mean"][j] + 3.0 * stats["std"][j])


def check_unit_plausibility(
    feature: str,
    stats: Mapping[str, np.ndarray] | None,
    joint_names: Sequence[str],
    units: Sequence[str],
) -> list[UnitsFinding]:
    """Compare a feature's dataset statistics (mean/std, min/max when present) with the configured units.

    Errors are physically impossible values for the unit (radians beyond a full turn, degrees beyond
    360, range values outside -100..100 / 0..100): the checkpoint was trained in other units and would
    command wild motion. Warnings are unlikely but possible (degree or range stats that move less than one
    unit, which looks like radians; degree stats clamped at exactly +-100, which looks like range mode).
    """
    if not stats or "mean" not in stats or "std" not in stats:
        return [
            UnitsFinding("warning", f"checkpoint has no mean/std statistics for {feature}: units not checked")
        ]
    stats = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in stats.items()}
    if stats["mean"].shape[0] != len(joint_names):
        return []  # the dimension mismatch is reported by the feature check
    findings: list[UnitsFinding] = []
    hint = (
        "set units (radians | degrees | range) or joint_units to the units the training data was recorded in"
    )
    for j, (name, unit) in enumerate(zip(joint_names, units, strict=True)):
        extent, (low, high), std = _extent(stats, j), _bounds(stats, j), float(stats["std"][j])
        described = f"{feature}[{j}] ({name}): mean {stats['mean'][j]:.3g}, std {std:.3g}, "
        described += f"range {low:.3g}..{high:.3g}"
        if unit == RAD and extent > 2.0 * math.pi * 1.1:
            findings.append(
                UnitsFinding("error", f"{described} cannot be radians (beyond a full turn); {hint}")
            )
        elif unit == DEG and extent > 370.0:
            findings.append(
                UnitsFinding("error", f"{described} cannot be degrees (beyond a full turn); {hint}")
            )
        elif unit == RANGE_M100_100 and extent > 105.0:
            findings.append(
                UnitsFinding("error", f"{described} is outside LeRobot's -100..100 range mode; {hint}")
            )
        elif unit == RANGE_0_100 and (low < -5.0 or high > 105.0):
            findings.append(
                UnitsFinding("error", f"{described} is outside LeRobot's 0..100 range mode; {hint}")
            )
        elif unit in (DEG, *RANGE_UNITS) and std < 1.0 and extent < math.pi:
            findings.append(
                UnitsFinding("warning", f"{described} moves less than one {unit} unit: it looks like radians")
            )
    body_deg = [j for j, u in enumerate(units) if u == DEG]
    if body_deg and all(_extent(stats, j) <= 100.5 for j in body_deg):
        clamped = [joint_names[j] for j in body_deg if _extent(stats, j) >= 99.5]
        if clamped and "min" in stats:
            findings.append(
                UnitsFinding(
                    "warning",
                    f"{feature}: joints {clamped} reach exactly +-100 and none exceeds it, which looks like "
                    "LeRobot's -100..100 range mode rather than degrees",
                )
            )
    return findings
