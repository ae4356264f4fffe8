"""Feature statistics of ``meta/episodes`` and ``meta/stats.json``, computed as LeRobot 0.4.4 computes them.

Per episode (:func:`episode_feature_stats`, :func:`episode_image_stats`):

- min, max, mean, std over the frames, in the dtype the column is stored with (float32 joints: float32
  arithmetic; integer index columns: integer min/max, float64 mean), ``count`` = number of frames;
- the quantiles :data:`QUANTILES` are read from a histogram of :data:`HISTOGRAM_BINS` equal bins spanning
  min..max, interpolating linearly inside the bin where the cumulative count reaches ``q * count``;
- images: only a sample of each episode's frames (:func:`sampled_frame_indices`: 100 frames, or all when
  fewer, more for long episodes) taken every ``k``-th pixel when a side reaches 300 pixels
  (:func:`downsample`); per channel over all sampled pixels, scaled to 0..1 and shaped (3, 1, 1);
  ``count`` = number of sampled frames. One deliberate difference: LeRobot squares the uint8 pixels without
  widening them (the square wraps modulo 256), so its image ``std`` is meaningless (mostly 0); the std here
  is the true one.

Over the dataset (:func:`aggregate_stats`): min of the mins, max of the maxes, count-weighted means, the
pooled standard deviation, and count-weighted averages of the quantiles, folded in episode by episode (LeRobot
updates ``stats.json`` after every saved episode in the same way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
HISTOGRAM_BINS = 5000
_EDGE_PAD = 1e-10

Stats = dict[str, np.ndarray]


def _quantile_name(q: float) -> str:
    return f"q{int(q * 100):02d}"


def _interpolate(cumulative: np.ndarray, edges: np.ndarray, target: float) -> np.generic:
    """Where the cumulative bin counts reach ``target``, linearly inside that bin."""
    k = int(np.searchsorted(cumulative, target))
    if k == 0:
        return edges[0]
    if k >= len(cumulative):
        return edges[-1]
    before = cumulative[k - 1]
    inside = cumulative[k] - before
    if inside == 0:
        return edges[k]
    return edges[k] + (target - before) / inside * (edges[k + 1] - edges[k])


def _column_quantiles(column: np.ndarray, low: np.generic, high: np.generic) -> list[np.generic]:
    """The :data:`QUANTILES` of ``column`` estimated from its histogram over ``low..high``."""
    edges = np.linspace(low - _EDGE_PAD, high + _EDGE_PAD, HISTOGRAM_BINS + 1)
    counts, _ = np.histogram(column, bins=edges)
    cumulative = np.cumsum(np.zeros(HISTOGRAM_BINS) + counts)
    return [_interpolate(cumulative, edges, q * len(column)) for q in QUANTILES]


def _quantiles(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict[str, np.ndarray]:
    """Histogram quantiles of every column of ``values`` (rows = samples)."""
    per_column = [_column_quantiles(values[:, j], low[j], high[j]) for j in range(values.shape[1])]
    return {_quantile_name(q): np.array([c[i] for c in per_column]) for i, q in enumerate(QUANTILES)}


def sample_stats(values: np.ndarray, count: int | None = None) -> Stats:
    """min, max, mean, std, count and quantiles of each column of ``values`` (rows = samples).

    Arithmetic stays in the dtype of ``values`` (as LeRobot's); ``count`` defaults to the number of rows.
    """
    values = values.reshape(len(values), -1)
    count = len(values) if count is None else count
    mean = np.mean(values, axis=0)
    if len(values) < 2:  # too few samples for a histogram: quantiles are the mean
        stats = {"min": values.min(axis=0), "max": values.max(axis=0), "mean": mean}
        stats.update(std=np.std(values, axis=0), count=np.array([count]))
        return {**stats, **{_quantile_name(q): mean.copy() for q in QUANTILES}}
    wide = values.astype(np.float64) if values.dtype.kind in "iu" else values
    variance = np.mean(wide**2, axis=0).astype(mean.dtype) - mean**2
    low, high = values.min(axis=0), values.max(axis=0)
    stats = {"min": low, "max": high, "mean": mean, "std": np.sqrt(np.maximum(0, variance))}
    stats["count"] = np.array([count])
    return {**stats, **_quantiles(values, low, high)}


def episode_feature_stats(values: np.ndarray) -> Stats:
    """Statistics of one episode's column (T,) or (T, D), as stored (float32 joints, int64 indices)."""
    return sample_stats(np.asarray(values))


def sample_count(frames: int) -> int:
    """How many of an episode's ``frames`` the image statistics look at."""
    smallest = min(frames, 100)
    return max(smallest, min(int(frames**0.75), 10_000))


def sampled_frame_indices(frames: int) -> list[int]:
    """The frames of an episode whose images enter the statistics, evenly spread, first and last included."""
    return np.round(np.linspace(0, frames - 1, sample_count(frames))).astype(int).tolist()


def downsample(rgb: np.ndarray, target: int = 150, threshold: int = 300) -> np.ndarray:
    """Every ``k``-th row and column of an (H, W, 3) image whose longer side reaches ``threshold``."""
    height, width = rgb.shape[:2]
    if max(height, width) < threshold:
        return rgb
    step = int(max(height, width) / target)
    return rgb[::step, ::step]


def episode_image_stats(samples: Sequence[np.ndarray]) -> Stats:
    """Per-channel statistics (3, 1, 1) in 0..1 of an episode's sampled (H, W, 3) uint8 images."""
    pixels = np.stack(samples).reshape(-1, 3)
    stats = sample_stats(pixels, count=len(samples))
    return {k: v if k == "count" else (v / 255.0).reshape(3, 1, 1) for k, v in stats.items()}


def _pooled(stats: Sequence[Mapping[str, np.ndarray]]) -> Stats:
    """Combine the statistics of disjoint parts of one feature (count-weighted)."""
    counts = np.stack([s["count"] for s in stats])
    total = counts.sum(axis=0)
    means = np.stack([s["mean"] for s in stats])
    weights = counts.reshape(counts.shape + (1,) * (means.ndim - counts.ndim))
    mean = (means * weights).sum(axis=0) / total
    variance = ((np.stack([s["std"] ** 2 for s in stats]) + (means - mean) ** 2) * weights).sum(
        axis=0
    ) / total
    pooled = {
        "min": np.min(np.stack([s["min"] for s in stats]), axis=0),
        "max": np.max(np.stack([s["max"] for s in stats]), axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": total,
    }
    for name in (_quantile_name(q) for q in QUANTILES):
        pooled[name] = (np.stack([s[name] for s in stats]) * weights).sum(axis=0) / total
    return pooled


def aggregate_stats(per_episode: Sequence[Mapping[str, Stats]]) -> dict[str, Stats]:
    """Dataset statistics from the episodes', folded in one at a time (as LeRobot's recording does)."""
    total: dict[str, Stats] = dict(per_episode[0])
    for episode in per_episode[1:]:
        total = {key: _pooled([total[key], episode[key]]) for key in total}
    return total


def stats_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    """Statistics as nested lists, ready for ``json.dumps``."""
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}
