"""Feature statistics of ``meta/stats.json`` and ``meta/episodes``: per episode and over all frames."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)

Stats = dict[str, np.ndarray]


def _quantile_name(q: float) -> str:
    return f"q{round(q * 100):02d}"


def vector_stats(values: np.ndarray) -> Stats:
    """min, max, mean, std, count and the :data:`QUANTILES` of each column of ``values``."""
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    stats = {
        "min": values.min(axis=0),
        "max": values.max(axis=0),
        "mean": values.mean(axis=0),
        "std": values.std(axis=0),
        "count": np.array([len(values)]),
    }
    for q in QUANTILES:
        stats[_quantile_name(q)] = np.quantile(values, q, axis=0)
    return stats


def image_stats(
    sums: np.ndarray, squares: np.ndarray, mins: np.ndarray, maxs: np.ndarray, pixels: int, frames: int
) -> Stats:
    """Per-channel statistics (shape (3, 1, 1), scaled to 0..1) from running pixel sums."""
    mean = sums / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean**2, 0.0))
    shape = (3, 1, 1)
    stats = {
        "min": (mins / 255.0).reshape(shape),
        "max": (maxs / 255.0).reshape(shape),
        "mean": (mean / 255.0).reshape(shape),
        "std": (std / 255.0).reshape(shape),
        "count": np.array([frames]),
    }
    for q in QUANTILES:  # LeRobot fills image quantiles too; the mean is a stand-in (images use IDENTITY)
        stats[_quantile_name(q)] = stats["mean"].copy()
    return stats


class ImageStatsAccumulator:
    """Running per-channel pixel sums, squares, minima and maxima of one camera's frames."""

    def __init__(self) -> None:
        self.sums = np.zeros(3)
        self.squares = np.zeros(3)
        self.mins = np.full(3, 255.0)
        self.maxs = np.zeros(3)
        self.pixels = 0

    def add(self, rgb: np.ndarray) -> None:
        """Account for one RGB frame."""
        pixels = rgb.reshape(-1, 3).astype(np.float64)
        self.sums += pixels.sum(axis=0)
        self.squares += (pixels**2).sum(axis=0)
        self.mins = np.minimum(self.mins, pixels.min(axis=0))
        self.maxs = np.maximum(self.maxs, pixels.max(axis=0))
        self.pixels += len(pixels)

    def stats(self, frames: int) -> Stats:
        """:func:`image_stats` of the frames seen so far (``frames`` is the count to report)."""
        return image_stats(self.sums, self.squares, self.mins, self.maxs, max(1, self.pixels), frames)


def columns_stats(columns: Mapping[str, np.ndarray]) -> dict[str, Stats]:
    """:func:`vector_stats` of each column, in the order given."""
    return {name: vector_stats(values) for name, values in columns.items()}


def aggregate_image_stats(per_episode: Sequence[Stats], lengths: Sequence[int], total: int) -> Stats:
    """Frame-weighted combination of one camera's per-episode image statistics."""
    weights = np.array(lengths, dtype=np.float64)
    mean = sum(w * p["mean"] for w, p in zip(weights, per_episode, strict=True)) / weights.sum()
    second = (
        sum(w * (p["std"] ** 2 + p["mean"] ** 2) for w, p in zip(weights, per_episode, strict=True))
        / weights.sum()
    )
    return {
        "min": np.min([p["min"] for p in per_episode], axis=0),
        "max": np.max([p["max"] for p in per_episode], axis=0),
        "mean": mean,
        "std": np.sqrt(np.maximum(second - mean**2, 0.0)),
        "count": np.array([total]),
        **{_quantile_name(q): mean.copy() for q in QUANTILES},
    }


def stats_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    """Statistics as nested lists, ready for ``json.dumps``."""
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}
