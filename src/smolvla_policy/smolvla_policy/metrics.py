"""ROS-free metrics of predicted action chunks against recorded ground truth (all positions in rad).

One :class:`ChunkRecord` per predicted chunk: the prediction (N x J), the ground truth resampled at the
chunk's action times ``stamp + i * dt`` (NaN where the recording has no command), and the inference latency.
:func:`compute_metrics` aggregates them:

- ``mae`` / ``rmse``: per joint and overall, and ``mae_by_step`` / ``rmse_by_step`` (N x J) by horizon step;
- ``gripper``: open/closed agreement, the state being ``position > threshold`` (default: the middle of the
  recorded gripper range);
- ``smoothness``: mean absolute second difference of consecutive actions (rad per step^2) of the predicted
  and of the recorded trajectories, and the largest single step;
- ``boundary_jumps``: at each new chunk's first action time, the largest joint difference between the new
  chunk and the previous chunk's plan interpolated at that time (what an executor switching plans would see);
- ``latency``: inference latency statistics (s).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class ChunkRecord:
    """One predicted chunk and the ground truth at its action times (rad)."""

    stamp: float  # observation stamp (s); action i is meant for stamp + i * dt
    dt: float
    predicted: np.ndarray  # (N, J)
    truth: np.ndarray  # (N, J), NaN where no ground truth exists
    latency: float = math.nan  # s
    task: str = ""

    @property
    def times(self) -> np.ndarray:
        return self.stamp + np.arange(len(self.predicted)) * self.dt

    def abs_error(self) -> np.ndarray:
        return np.abs(self.predicted - self.truth)


def _stats(values: Sequence[float]) -> dict[str, float | int]:
    values = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if len(values) == 0:
        return {"count": 0}
    return {
        "count": len(values),
        "mean": float(values.mean()),
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "max": float(values.max()),
        "min": float(values.min()),
    }


def _nan_reduce(errors: np.ndarray, axis) -> tuple[np.ndarray, np.ndarray]:
    """(MAE, RMSE) over ``axis`` ignoring NaN; NaN where nothing is valid."""
    valid = np.isfinite(errors)
    count = valid.sum(axis=axis)
    filled = np.where(valid, errors, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = filled.sum(axis=axis) / count
        rmse = np.sqrt((filled**2).sum(axis=axis) / count)
    return mae, rmse


def boundary_jumps(records: Sequence[ChunkRecord]) -> list[float]:
    """For consecutive chunks: max |new[0] - old plan at new.stamp| over joints (rad), when old covers it."""
    jumps = []
    for old, new in itertools.pairwise(records):
        times = old.times
        if len(times) == 0 or not times[0] - 1e-9 <= new.stamp <= times[-1] + 1e-9:
            continue
        old_at = np.array(
            [np.interp(new.stamp, times, old.predicted[:, j]) for j in range(old.predicted.shape[1])]
        )
        jumps.append(float(np.max(np.abs(new.predicted[0] - old_at))))
    return jumps


def second_difference(chunks: Sequence[np.ndarray]) -> np.ndarray:
    """|x[i+1] - 2 x[i] + x[i-1]| of every chunk, stacked (M, J)."""
    parts = [np.abs(np.diff(c, n=2, axis=0)) for c in chunks if len(c) >= 3]
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def _smoothness(chunks: Sequence[np.ndarray], joint_names: Sequence[str]) -> dict:
    second = second_difference([c[np.isfinite(c).all(axis=1)] for c in chunks])
    steps = [np.abs(np.diff(c[np.isfinite(c).all(axis=1)], axis=0)) for c in chunks if len(c) >= 2]
    steps = [s for s in steps if len(s)]
    if second.size == 0:
        return {
            "mean_abs_second_difference": None,
            "per_joint_mean_abs_second_difference": {},
            "max_step": None,
        }
    return {
        "mean_abs_second_difference": float(second.mean()),
        "per_joint_mean_abs_second_difference": {
            n: float(v) for n, v in zip(joint_names, second.mean(axis=0), strict=True)
        },
        "max_step": float(max(s.max() for s in steps)) if steps else None,
    }


def gripper_agreement(
    records: Sequence[ChunkRecord], gripper_index: int, threshold: float | None = None
) -> dict:
    """Fraction of action steps where predicted and recorded gripper are on the same side of ``threshold``."""
    pred = np.concatenate([r.predicted[:, gripper_index] for r in records]) if records else np.zeros(0)
    truth = np.concatenate([r.truth[:, gripper_index] for r in records]) if records else np.zeros(0)
    valid = np.isfinite(truth)
    pred, truth = pred[valid], truth[valid]
    if len(truth) == 0:
        return {"agreement": None, "threshold": threshold, "steps": 0}
    if threshold is None:
        threshold = float((truth.min() + truth.max()) / 2)
    pred_open, true_open = pred > threshold, truth > threshold
    return {
        "agreement": float(np.mean(pred_open == true_open)),
        "threshold": float(threshold),
        "steps": len(truth),
        "recorded_open_fraction": float(true_open.mean()),
        "predicted_open_fraction": float(pred_open.mean()),
    }


def compute_metrics(
    records: Sequence[ChunkRecord],
    joint_names: Sequence[str],
    gripper_joint: str | None = "gripper",
    gripper_threshold: float | None = None,
) -> dict:
    """All metrics as a JSON-able dict (see the module docstring); ``records`` in stamp order."""
    joint_names = list(joint_names)
    records = sorted(records, key=lambda r: r.stamp)
    out: dict = {"chunks": len(records), "joint_names": joint_names, "units": "rad"}
    if not records:
        return out
    horizon = max(len(r.predicted) for r in records)
    padded = np.full((len(records), horizon, len(joint_names)), np.nan)
    for k, r in enumerate(records):
        padded[k, : len(r.predicted)] = r.abs_error()
    mae_step, rmse_step = _nan_reduce(padded, axis=0)  # (N, J)
    flat = padded.reshape(-1, len(joint_names))
    mae_joint, rmse_joint = _nan_reduce(flat, axis=0)
    mae_all, rmse_all = _nan_reduce(flat.reshape(-1), axis=0)
    valid = np.isfinite(padded)
    out.update(
        {
            "compared_actions": int(valid.all(axis=2).sum()),
            "actions_without_ground_truth": int(
                sum((~np.isfinite(r.truth).all(axis=1)).sum() for r in records)
            ),
            "mae": {
                "all": _float(mae_all),
                **{n: _float(v) for n, v in zip(joint_names, mae_joint, strict=True)},
            },
            "rmse": {
                "all": _float(rmse_all),
                **{n: _float(v) for n, v in zip(joint_names, rmse_joint, strict=True)},
            },
            "mae_by_step": [[_float(v) for v in row] for row in mae_step],
            "rmse_by_step": [[_float(v) for v in row] for row in rmse_step],
            "max_abs_error": _float(np.nanmax(flat)) if valid.any() else None,
        }
    )
    if gripper_joint and gripper_joint in joint_names:
        out["gripper"] = gripper_agreement(records, joint_names.index(gripper_joint), gripper_threshold)
    out["smoothness"] = {
        "predicted": _smoothness([r.predicted for r in records], joint_names),
        "recorded": _smoothness([r.truth for r in records], joint_names),
    }
    out["boundary_jumps"] = _stats(boundary_jumps(records))
    out["latency"] = _stats([r.latency for r in records])
    return out


def _float(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
