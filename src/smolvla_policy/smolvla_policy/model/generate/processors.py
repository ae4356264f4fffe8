"""Dataset statistics and LeRobot's SmolVLA pre/post-processor pipeline files (JSON + normaliser state)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..config import ACTION_KEY, STATE_KEY
from .backbone import write_json

PREPROCESSOR_STATE_FILE = "policy_preprocessor_step_5_normalizer_processor.safetensors"
POSTPROCESSOR_STATE_FILE = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
NORMALIZATION_EPS = 1e-8

Stats = dict[str, dict[str, np.ndarray]]


def default_stats(
    image_shapes: Mapping[str, Sequence[int]], state_dim: int, action_dim: int, seed: int
) -> Stats:
    """Plausible dataset statistics (degree-like joint values), stored like LeRobot's."""
    rng = np.random.default_rng(seed + 7919)
    stats: Stats = {}
    for key, dim in ((STATE_KEY, state_dim), (ACTION_KEY, action_dim)):
        stats[key] = {"mean": rng.uniform(-30.0, 30.0, dim), "std": rng.uniform(5.0, 40.0, dim)}
    for key in image_shapes:
        stats[key] = {"mean": rng.uniform(0.3, 0.6, (3, 1, 1)), "std": rng.uniform(0.15, 0.3, (3, 1, 1))}
    return stats


def _checked_entry(
    key: str,
    shape: tuple[int, ...],
    given: Mapping[str, Sequence[float] | np.ndarray],
    defaults: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """``given`` over ``defaults`` as float32, every value of ``shape`` and a positive std."""
    entry = {name: np.asarray(v, dtype=np.float32) for name, v in defaults.items()}
    entry.update({name: np.asarray(v, dtype=np.float32) for name, v in given.items()})
    for name, value in entry.items():
        if value.shape != shape:
            raise ValueError(f"stats[{key!r}][{name!r}] has shape {value.shape}, expected {shape}")
    if np.any(entry["std"] <= 0):
        raise ValueError(f"stats[{key!r}]['std'] must be positive, got {entry['std']}")
    return entry


def _derive_bounds(entry: dict[str, np.ndarray], shape: tuple[int, ...]) -> None:
    """Fill in missing min/max (and q01/q99 for vectors) from the mean and std."""
    if len(shape) == 3:  # image statistics in [0, 1]
        entry.setdefault("min", np.zeros(shape, np.float32))
        entry.setdefault("max", np.ones(shape, np.float32))
        return
    mean, std = entry["mean"], entry["std"]
    entry.setdefault("min", mean - 3 * std)
    entry.setdefault("max", mean + 3 * std)
    entry.setdefault("q01", mean - 2.326 * std)
    entry.setdefault("q99", mean + 2.326 * std)


def complete_stats(
    stats: Mapping[str, Mapping[str, Sequence[float] | np.ndarray]],
    defaults: Mapping[str, Mapping[str, np.ndarray]],
    expected_shapes: Mapping[str, tuple[int, ...]],
) -> Stats:
    """Merge user stats over the defaults, check shapes, and derive min/max (and q01/q99 for vectors)."""
    unknown = sorted(set(stats) - set(expected_shapes))
    if unknown:
        raise ValueError(f"stats for unknown feature(s) {unknown}; features: {sorted(expected_shapes)}")
    merged: Stats = {}
    for key, shape in expected_shapes.items():
        entry = _checked_entry(key, shape, stats.get(key, {}), defaults[key])
        _derive_bounds(entry, shape)
        merged[key] = {name: value.astype(np.float32) for name, value in entry.items()}
    return merged


def _flat_stats(
    stats: Mapping[str, Mapping[str, np.ndarray]], keys: Sequence[str]
) -> dict[str, torch.Tensor]:
    return {
        f"{key}.{name}": torch.from_numpy(np.ascontiguousarray(v))
        for key in keys
        for name, v in stats[key].items()
    }


def _preprocessor(policy: Mapping[str, object], features: Mapping[str, object]) -> dict[str, object]:
    tokenizer_step = {
        "max_length": policy["tokenizer_max_length"],
        "task_key": "task",
        "padding_side": "right",
        "padding": policy["pad_language_to"],
        "truncation": True,
        "tokenizer_name": policy["vlm_model_name"],
    }
    normalizer_step = {
        "eps": NORMALIZATION_EPS,
        "features": features,
        "norm_map": policy["normalization_mapping"],
    }
    return {
        "name": "policy_preprocessor",
        "steps": [
            {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
            {"registry_name": "to_batch_processor", "config": {}},
            {"registry_name": "smolvla_new_line_processor", "config": {}},
            {"registry_name": "tokenizer_processor", "config": tokenizer_step},
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
            {
                "registry_name": "normalizer_processor",
                "config": normalizer_step,
                "state_file": PREPROCESSOR_STATE_FILE,
            },
        ],
    }


def _postprocessor(policy: Mapping[str, object]) -> dict[str, object]:
    unnormalizer_step = {
        "eps": NORMALIZATION_EPS,
        "features": {ACTION_KEY: policy["output_features"][ACTION_KEY]},
        "norm_map": policy["normalization_mapping"],
    }
    return {
        "name": "policy_postprocessor",
        "steps": [
            {
                "registry_name": "unnormalizer_processor",
                "config": unnormalizer_step,
                "state_file": POSTPROCESSOR_STATE_FILE,
            },
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
        ],
    }


def write_processors(
    checkpoint: Path, policy: Mapping[str, object], stats: Mapping[str, Mapping[str, np.ndarray]]
) -> None:
    """Write LeRobot's SmolVLA pre/post-processor pipelines (JSON + normaliser state files)."""
    from safetensors.torch import save_file

    features = {**policy["input_features"], **policy["output_features"]}
    write_json(checkpoint / "policy_preprocessor.json", _preprocessor(policy, features), indent=2)
    write_json(checkpoint / "policy_postprocessor.json", _postprocessor(policy), indent=2)
    flat = _flat_stats(stats, list(features))
    save_file(flat, str(checkpoint / PREPROCESSOR_STATE_FILE))
    save_file(flat, str(checkpoint / POSTPROCESSOR_STATE_FILE))
