"""LeRobot-compatible calibration files and unit conversions for SO-100/SO-101 arms.

File format (what LeRobot 0.4.x writes with ``indent=4``): a JSON object keyed by motor name, each value
``{"id", "drive_mode", "homing_offset", "range_min", "range_max"}`` in raw encoder steps (ranges in the
Present_Position frame, i.e. after the homing offset). A file written by LeRobot loads and saves back
byte-for-byte.

Units (all functions are vectorised: ``raw`` has the joints on its last axis, in ``names`` order):

- ROS radians (REP-103): ``rad = sign * (raw - mid) * 2*pi / 4095``, ``mid = (range_min + range_max) / 2``,
  ``sign = -1`` where ``drive_mode`` is 1. The gripper is a joint in radians too.
- LeRobot degrees: ``(raw - mid) * 360 / 4095``, not clamped; back with ``int(deg * 4095 / 360 + mid)``.
- LeRobot range mode: body joints clamped to the range and mapped to -100..100, the gripper to 0..100
  (the gripper uses 0..100 in degree mode too); ``drive_mode`` inverts, as in LeRobot.
- :func:`radians_to_lerobot` / :func:`lerobot_to_radians` convert between the ROS side and a checkpoint's
  units through the calibration.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smolvla_common.joints import GRIPPER

RESOLUTION_DIVISOR = 4095  # LeRobot divides by resolution - 1
MAX_HOMING_OFFSET = 2047  # Homing_Offset is sign-magnitude with the sign at bit 11
GRIPPER_NAMES: tuple[str, ...] = (GRIPPER,)
FIELDS: tuple[str, ...] = ("id", "drive_mode", "homing_offset", "range_min", "range_max")


@dataclass
class MotorCalibration:
    """Calibration of one motor, as in LeRobot's file (raw encoder steps)."""

    id: int
    drive_mode: int
    homing_offset: int
    range_min: int
    range_max: int

    @property
    def mid(self) -> float:
        return (self.range_min + self.range_max) / 2.0

    @property
    def sign(self) -> int:
        return -1 if self.drive_mode else 1

    def to_radians(self, raw: float) -> float:
        """Raw steps -> ROS radians (one joint of :func:`raw_to_radians`)."""
        return float(_steps_to_radians(raw, self.mid, self.sign))

    def to_raw(self, rad: float) -> int:
        """ROS radians -> the nearest goal step inside the calibrated range (one joint of
        :func:`radians_to_raw` with ``clamp``)."""
        raw = round(float(_radians_to_steps(rad, self.mid, self.sign)))
        return min(max(raw, self.range_min), self.range_max)

    def range_radians(self) -> tuple[float, float]:
        """The calibrated range in ROS radians, lower < upper even with drive_mode 1."""
        a, b = self.to_radians(self.range_min), self.to_radians(self.range_max)
        return min(a, b), max(a, b)

    def validate(self, name: str) -> None:
        """Raise ValueError naming the motor and the field when a value cannot come from a real servo."""
        for key in FIELDS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"motor {name!r}: {key} must be an integer, got {value!r}")
        if not 0 <= self.id <= 253:
            raise ValueError(f"motor {name!r}: id {self.id} out of range 0..253")
        if self.drive_mode not in (0, 1):
            raise ValueError(f"motor {name!r}: drive_mode must be 0 or 1, got {self.drive_mode}")
        if abs(self.homing_offset) > MAX_HOMING_OFFSET:
            raise ValueError(
                f"motor {name!r}: homing_offset {self.homing_offset} exceeds ±{MAX_HOMING_OFFSET} "
                "(the servo register cannot hold it); re-run calibration"
            )
        for key in ("range_min", "range_max"):
            if not 0 <= getattr(self, key) <= 4095:
                raise ValueError(f"motor {name!r}: {key} {getattr(self, key)} out of range 0..4095")
        if self.range_min >= self.range_max:
            raise ValueError(
                f"motor {name!r}: range_min {self.range_min} must be below range_max {self.range_max}; "
                "re-run calibration and move the joint through its whole range"
            )


@dataclass
class ArmCalibration:
    """Calibration of one arm: motor name -> :class:`MotorCalibration`, in file order."""

    motors: dict[str, MotorCalibration]
    trailing_newline: bool = field(default=False, compare=False)  # LeRobot writes none; kept on round trip

    def __post_init__(self) -> None:
        seen: dict[int, str] = {}
        for name, motor in self.motors.items():
            motor.validate(name)
            if motor.id in seen:
                raise ValueError(f"motors {seen[motor.id]!r} and {name!r} share id {motor.id}")
            seen[motor.id] = name

    @property
    def names(self) -> list[str]:
        return list(self.motors)

    @property
    def ids(self) -> list[int]:
        return [m.id for m in self.motors.values()]

    def motor(self, name: str) -> MotorCalibration:
        try:
            return self.motors[name]
        except KeyError:
            raise KeyError(
                f"motor {name!r} is not in the calibration (it has {', '.join(self.motors)})"
            ) from None

    def name_of(self, motor_id: int) -> str:
        for name, motor in self.motors.items():
            if motor.id == motor_id:
                return name
        raise KeyError(f"no motor with id {motor_id} in the calibration (ids {self.ids})")

    def _select(self, names: Sequence[str] | None) -> list[MotorCalibration]:
        return [self.motor(n) for n in (self.names if names is None else names)]

    def mins(self, names: Sequence[str] | None = None) -> np.ndarray:
        return np.array([m.range_min for m in self._select(names)], dtype=float)

    def maxs(self, names: Sequence[str] | None = None) -> np.ndarray:
        return np.array([m.range_max for m in self._select(names)], dtype=float)

    def mids(self, names: Sequence[str] | None = None) -> np.ndarray:
        return np.array([m.mid for m in self._select(names)], dtype=float)

    def signs(self, names: Sequence[str] | None = None) -> np.ndarray:
        return np.array([m.sign for m in self._select(names)], dtype=float)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, dict[str, int]]:
        return {name: {key: int(getattr(m, key)) for key in FIELDS} for name, m in self.motors.items()}

    def to_json(self) -> str:
        """The file text, formatted like LeRobot (``json.dump(..., indent=4)``)."""
        return json.dumps(self.to_dict(), indent=4) + ("\n" if self.trailing_newline else "")

    @classmethod
    def from_dict(cls, data: object, source: str = "calibration") -> ArmCalibration:
        if not isinstance(data, dict) or not data:
            raise ValueError(
                f"{source}: expected a JSON object keyed by motor name, got {type(data).__name__}"
            )
        if "motor_names" in data or any(isinstance(v, list) for v in data.values()):
            raise ValueError(
                f"{source}: this is the legacy LeRobot (<= 0.1, control_robot.py) calibration format; "
                "re-run calibration with a current LeRobot or with this package's calibrate command"
            )
        motors = {}
        for name, entry in data.items():
            if not isinstance(entry, dict):
                raise ValueError(f"{source}: motor {name!r} must map to an object with fields {list(FIELDS)}")
            missing = [key for key in FIELDS if key not in entry]
            extra = [key for key in entry if key not in FIELDS]
            if missing or extra:
                raise ValueError(
                    f"{source}: motor {name!r}: missing fields {missing}, unexpected fields {extra}; "
                    f"expected exactly {list(FIELDS)}"
                )
            motors[name] = MotorCalibration(**{key: entry[key] for key in FIELDS})
        try:
            return cls(motors)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "calibration") -> ArmCalibration:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: not valid JSON ({exc})") from None
        cal = cls.from_dict(data, source)
        cal.trailing_newline = text.endswith("\n")
        return cal

    # ------------------------------------------------------------------ units
    def range_radians(self, names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated range per joint in ROS radians: (lower, upper), lower < upper even with drive_mode 1."""
        a = raw_to_radians(self.mins(names), self, names)
        b = raw_to_radians(self.maxs(names), self, names)
        return np.minimum(a, b), np.maximum(a, b)


# ---------------------------------------------------------------------- files
def load_calibration(path: str | os.PathLike) -> ArmCalibration:
    """Read a LeRobot calibration JSON file (clear errors for missing, malformed or legacy files)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"calibration file {path} does not exist; pass the file LeRobot wrote (usually under "
            f"{default_calibration_root()}/robots/<robot>/<id>.json) or run the calibrate command"
        ) from None
    return ArmCalibration.from_json(text, source=str(path))


def _file_mode(path: Path) -> int:
    """The mode a rewritten ``path`` keeps: its current one, else 0644 (what LeRobot's files get)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o644


def save_calibration(calibration: ArmCalibration, path: str | os.PathLike) -> Path:
    """Write atomically (temporary file + rename) in LeRobot's format; creates parent directories.

    A new file gets mode 0644, as LeRobot's files (plain ``open``, umask 022) have; an existing one keeps its
    mode (the temporary file would otherwise make it 0600).
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(calibration.to_json())
            os.fchmod(file.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def default_calibration_root() -> Path:
    """LeRobot's calibration root: $HF_LEROBOT_CALIBRATION, else $HF_LEROBOT_HOME/calibration, else
    $HF_HOME/lerobot/calibration, else ~/.cache/huggingface/lerobot/calibration."""
    if os.environ.get("HF_LEROBOT_CALIBRATION"):
        return Path(os.environ["HF_LEROBOT_CALIBRATION"]).expanduser()
    if os.environ.get("HF_LEROBOT_HOME"):
        return Path(os.environ["HF_LEROBOT_HOME"]).expanduser() / "calibration"
    hf_home = Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser()
    return hf_home / "lerobot" / "calibration"


def candidate_calibration_paths(
    arm_id: str, leader: bool = False, root: str | os.PathLike | None = None
) -> list[Path]:
    """Where LeRobot versions put the file of arm ``arm_id`` (newest layout first)."""
    base = Path(root).expanduser() if root is not None else default_calibration_root()
    if leader:
        folders = ["teleoperators/so_leader", "teleoperators/so101_leader", "teleoperators/so100_leader"]
    else:
        folders = ["robots/so_follower", "robots/so101_follower", "robots/so100_follower"]
    return [base / folder / f"{arm_id}.json" for folder in folders]


def find_calibration_file(arm_id: str, leader: bool = False, root: str | os.PathLike | None = None) -> Path:
    """The first existing file among :func:`candidate_calibration_paths`; FileNotFoundError lists them all."""
    candidates = candidate_calibration_paths(arm_id, leader, root)
    for path in candidates:
        if path.is_file():
            return path
    listed = "\n  ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"no calibration file for arm id {arm_id!r}; looked in:\n  {listed}")


# ---------------------------------------------------------------------- conversions
def _steps_to_radians(raw, mid, sign):
    """The one formula from raw steps to ROS radians: zero at mid-range, drive_mode inverts."""
    return sign * (raw - mid) * (2.0 * math.pi / RESOLUTION_DIVISOR)


def _radians_to_steps(rad, mid, sign):
    """Exact inverse of :func:`_steps_to_radians` (float steps)."""
    return mid + sign * rad * (RESOLUTION_DIVISOR / (2.0 * math.pi))


def raw_to_radians(raw, calibration: ArmCalibration, names: Sequence[str] | None = None) -> np.ndarray:
    """Raw Present_Position steps -> ROS radians (zero at mid-range, drive_mode inverts)."""
    return _steps_to_radians(np.asarray(raw, dtype=float), calibration.mids(names), calibration.signs(names))


def radians_to_raw_float(rad, calibration: ArmCalibration, names: Sequence[str] | None = None) -> np.ndarray:
    """ROS radians -> raw steps as floats (exact inverse of :func:`raw_to_radians`)."""
    return _radians_to_steps(np.asarray(rad, dtype=float), calibration.mids(names), calibration.signs(names))


def radians_to_raw(
    rad, calibration: ArmCalibration, names: Sequence[str] | None = None, clamp: bool = False
) -> np.ndarray:
    """ROS radians -> integer goal steps (rounded to nearest; ``clamp`` limits to the calibrated range)."""
    raw = np.rint(radians_to_raw_float(rad, calibration, names))
    if clamp:
        raw = np.clip(raw, calibration.mins(names), calibration.maxs(names))
    return raw.astype(np.int64)


def clamp_radians(rad, calibration: ArmCalibration, names: Sequence[str] | None = None) -> np.ndarray:
    """Limit joint positions (radians) to the calibrated range."""
    low, high = calibration.range_radians(names)
    return np.clip(np.asarray(rad, dtype=float), low, high)


def raw_to_degrees(raw, calibration: ArmCalibration, names: Sequence[str] | None = None) -> np.ndarray:
    """LeRobot degree mode: ``(raw - mid) * 360 / 4095``, no clamping, no drive_mode."""
    raw = np.asarray(raw, dtype=float)
    return (raw - calibration.mids(names)) * (360.0 / RESOLUTION_DIVISOR)


def degrees_to_raw(deg, calibration: ArmCalibration, names: Sequence[str] | None = None) -> np.ndarray:
    """Inverse of LeRobot degree mode, truncating like LeRobot: ``int(deg * 4095 / 360 + mid)``."""
    deg = np.asarray(deg, dtype=float)
    return np.trunc(deg * (RESOLUTION_DIVISOR / 360.0) + calibration.mids(names)).astype(np.int64)


def _gripper_mask(names: Sequence[str], gripper_names: Iterable[str]) -> np.ndarray:
    grippers = set(gripper_names)
    return np.array([n in grippers for n in names], dtype=bool)


def raw_to_range(
    raw,
    calibration: ArmCalibration,
    names: Sequence[str] | None = None,
    gripper_names: Iterable[str] = GRIPPER_NAMES,
) -> np.ndarray:
    """LeRobot range mode: body joints -100..100, gripper 0..100, both clamped to the calibrated range."""
    names = calibration.names if names is None else list(names)
    low, high = calibration.mins(names), calibration.maxs(names)
    frac = (np.clip(np.asarray(raw, dtype=float), low, high) - low) / (high - low)
    inverted = calibration.signs(names) < 0
    gripper = _gripper_mask(names, gripper_names)
    body = np.where(inverted, -(frac * 200.0 - 100.0), frac * 200.0 - 100.0)
    grip = np.where(inverted, 100.0 - frac * 100.0, frac * 100.0)
    return np.where(gripper, grip, body)


def range_to_raw(
    values,
    calibration: ArmCalibration,
    names: Sequence[str] | None = None,
    gripper_names: Iterable[str] = GRIPPER_NAMES,
) -> np.ndarray:
    """Inverse of LeRobot range mode (clamped to ±100 / 0..100, truncated like LeRobot)."""
    names = calibration.names if names is None else list(names)
    low, high = calibration.mins(names), calibration.maxs(names)
    values = np.asarray(values, dtype=float)
    inverted = calibration.signs(names) < 0
    gripper = _gripper_mask(names, gripper_names)
    body = np.clip(np.where(inverted, -values, values), -100.0, 100.0)
    body_frac = (body + 100.0) / 200.0
    grip = np.clip(np.where(inverted, 100.0 - values, values), 0.0, 100.0)
    frac = np.where(gripper, grip / 100.0, body_frac)
    return np.trunc(frac * (high - low) + low).astype(np.int64)


def raw_to_lerobot(
    raw,
    calibration: ArmCalibration,
    names: Sequence[str] | None = None,
    use_degrees: bool = True,
    gripper_names: Iterable[str] = GRIPPER_NAMES,
) -> np.ndarray:
    """Raw steps -> LeRobot units: degrees (``use_degrees``) or -100..100 for the body; gripper 0..100."""
    names = calibration.names if names is None else list(names)
    ranged = raw_to_range(raw, calibration, names, gripper_names)
    if not use_degrees:
        return ranged
    return np.where(_gripper_mask(names, gripper_names), ranged, raw_to_degrees(raw, calibration, names))


def lerobot_to_raw(
    values,
    calibration: ArmCalibration,
    names: Sequence[str] | None = None,
    use_degrees: bool = True,
    gripper_names: Iterable[str] = GRIPPER_NAMES,
) -> np.ndarray:
    """LeRobot units -> integer raw goal steps (same rounding as LeRobot)."""
    names = calibration.names if names is None else list(names)
    ranged = range_to_raw(values, calibration, names, gripper_names)
    if not use_degrees:
        return ranged
    return np.where(_gripper_mask(names, gripper_names), ranged, degrees_to_raw(values, calibration, names))


def radians_to_lerobot(
    rad,
    calibration: ArmCalibration,
    names: Sequence[str] | None = None,
    use_degrees: bool = True,
    gripper_names: Iterable[str] = GRIPPER_NAMES,
) -> np.ndarray:
    """ROS radians -> a checkpoint's LeRobot units (for the policy's state input), via float raw steps."""
    raw = radians_to_raw_float(rad, calibration, names)
    return raw_to_lerobot(raw, calibration, names, use_degrees, gripper_names)


def lerobot_to_radians(
    values,
    calibration: ArmCalibration,
    names: Sequence[str] | None = None,
    use_degrees: bool = True,
    gripper_names: Iterable[str] = GRIPPER_NAMES,
) -> np.ndarray:
    """A checkpoint's LeRobot units -> ROS radians (for the policy's actions), without integer rounding.

    Range-mode values are clamped to ±100 / 0..100 like LeRobot does before writing a goal.
    """
    names = calibration.names if names is None else list(names)
    values = np.asarray(values, dtype=float)
    low, high, mid = calibration.mins(names), calibration.maxs(names), calibration.mids(names)
    inverted = calibration.signs(names) < 0
    gripper = _gripper_mask(names, gripper_names)
    body = np.clip(np.where(inverted, -values, values), -100.0, 100.0)
    grip = np.clip(np.where(inverted, 100.0 - values, values), 0.0, 100.0)
    ranged_raw = np.where(gripper, grip / 100.0, (body + 100.0) / 200.0) * (high - low) + low
    if use_degrees:
        degree_raw = values * (RESOLUTION_DIVISOR / 360.0) + mid
        raw = np.where(gripper, ranged_raw, degree_raw)
    else:
        raw = ranged_raw
    return raw_to_radians(raw, calibration, names)
