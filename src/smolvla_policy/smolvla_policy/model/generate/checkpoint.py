"""Whole random-weight SmolVLA checkpoints: ``config.json``, weights, processors and the backbone folder."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from smolvla_policy.features import ACTION_KEY, STATE_KEY
from smolvla_policy.features import image_key as image_feature_key

from .backbone import (
    SMOLVLM2_500M,
    TINY_BACKBONE,
    BackboneSpec,
    backbone_config,
    write_backbone_folder,
    write_json,
)
from .processors import complete_stats, default_stats, write_processors
from .weights import (
    _cross_kv_keys,
    count_parameters,
    random_tensor,
    state_dict_shapes,
    stored_dtype,
    write_safetensors_streaming,
)

REAL_SIZE_PARAMETERS = 450_046_176
"""Parameter count of ``lerobot/smolvla_base`` (lm_head included), 500 tensors."""


ImageShape = Sequence[int] | Mapping[str, Sequence[int]] | Sequence[Sequence[int]]
UserStats = Mapping[str, Mapping[str, Sequence[float] | np.ndarray]]

# LeRobot 0.4.4 SmolVLAConfig fields and class defaults, in the order save_pretrained writes them
# (features and the fields inherited from PreTrainedConfig come first and are filled in by policy_config()).
SMOLVLA_DEFAULTS: dict[str, object] = {
    "chunk_size": 50,
    "n_action_steps": 50,
    "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"},
    "max_state_dim": 32,
    "max_action_dim": 32,
    "resize_imgs_with_padding": [512, 512],
    "empty_cameras": 0,
    "adapt_to_pi_aloha": False,
    "use_delta_joint_actions_aloha": False,
    "tokenizer_max_length": 48,
    "num_steps": 10,
    "use_cache": True,
    "freeze_vision_encoder": True,
    "train_expert_only": True,
    "train_state_proj": True,
    "optimizer_lr": 0.0001,
    "optimizer_betas": [0.9, 0.95],
    "optimizer_eps": 1e-08,
    "optimizer_weight_decay": 1e-10,
    "optimizer_grad_clip_norm": 10,
    "scheduler_warmup_steps": 1000,
    "scheduler_decay_steps": 30000,
    "scheduler_decay_lr": 2.5e-06,
    "vlm_model_name": "HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
    "load_vlm_weights": False,
    "add_image_special_tokens": False,
    "attention_mode": "cross_attn",
    "prefix_length": -1,
    "pad_language_to": "longest",
    "num_expert_layers": -1,
    "num_vlm_layers": 16,
    "self_attn_every_n_layers": 2,
    "expert_width_multiplier": 0.75,
    "min_period": 0.004,
    "max_period": 4.0,
    "rtc_config": None,
    "compile_model": False,
    "compile_mode": "max-autotune",
}


def _image_shapes(cameras: Sequence[str], image_shape: ImageShape) -> dict[str, list[int]]:
    """Image feature key -> (3, H, W) for each camera, from one shape, one per camera or a mapping."""
    keys = [image_feature_key(c) for c in cameras]
    if len(set(keys)) != len(keys):
        raise ValueError(f"camera names must be unique, got {list(cameras)}")
    if isinstance(image_shape, Mapping):
        by_name = {image_feature_key(k): list(v) for k, v in image_shape.items()}
        missing = [k for k in keys if k not in by_name]
        if missing:
            raise ValueError(f"image_shape has no entry for {missing}")
        shapes = [by_name[k] for k in keys]
    elif len(image_shape) and isinstance(image_shape[0], Sequence):
        if len(image_shape) != len(keys):
            raise ValueError(f"got {len(image_shape)} image shapes for {len(keys)} cameras")
        shapes = [list(s) for s in image_shape]
    else:
        shapes = [list(image_shape)] * len(keys)
    for key, shape in zip(keys, shapes, strict=True):
        if len(shape) != 3 or shape[0] != 3 or min(shape) < 1:
            raise ValueError(f"image shape of {key} must be (3, H, W), got {shape}")
    return dict(zip(keys, shapes, strict=True))


def _base_fields(
    image_shapes: Mapping[str, Sequence[int]], state_dim: int, action_dim: int
) -> dict[str, object]:
    """Features and the fields SmolVLAConfig inherits from PreTrainedConfig, in save_pretrained's order."""
    input_features: dict[str, object] = {
        k: {"type": "VISUAL", "shape": list(s)} for k, s in image_shapes.items()
    }
    input_features[STATE_KEY] = {"type": "STATE", "shape": [state_dim]}
    return {
        "type": "smolvla",
        "n_obs_steps": 1,
        "input_features": input_features,
        "output_features": {ACTION_KEY: {"type": "ACTION", "shape": [action_dim]}},
        "device": "cpu",
        "use_amp": False,
        "use_peft": False,
        "push_to_hub": True,
        "repo_id": None,
        "private": None,
        "tags": None,
        "license": None,
        "pretrained_path": None,
    }


def policy_config(
    image_shapes: Mapping[str, Sequence[int]], state_dim: int, action_dim: int, **overrides: object
) -> dict[str, object]:
    """LeRobot's SmolVLA ``config.json`` content: every field, LeRobot's defaults unless overridden."""
    unknown = sorted(set(overrides) - set(SMOLVLA_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown SmolVLA config field(s) {unknown}; known: {sorted(SMOLVLA_DEFAULTS)}")
    if state_dim < 1 or action_dim < 1:
        raise ValueError(f"state_dim and action_dim must be >= 1, got {state_dim} and {action_dim}")
    config = _base_fields(image_shapes, state_dim, action_dim)
    config.update(copy.deepcopy(SMOLVLA_DEFAULTS))
    config.update(copy.deepcopy(overrides))
    if config["n_action_steps"] > config["chunk_size"]:
        raise ValueError(
            f"n_action_steps ({config['n_action_steps']}) must be <= chunk_size ({config['chunk_size']})"
        )
    if state_dim > config["max_state_dim"] or action_dim > config["max_action_dim"]:
        raise ValueError(
            f"state_dim {state_dim} / action_dim {action_dim} exceed max_state_dim "
            f"{config['max_state_dim']} / max_action_dim {config['max_action_dim']}"
        )
    return config


def _check_policy_fits_backbone(policy: Mapping[str, object], backbone: BackboneSpec) -> None:
    size = backbone.image_size
    if list(policy["resize_imgs_with_padding"]) != [size, size]:
        raise ValueError(
            f"resize_imgs_with_padding {policy['resize_imgs_with_padding']} must equal the backbone's "
            f"image_size {size} (the vision position embedding has a fixed number of patches)"
        )
    if 0 < policy["num_expert_layers"] != policy["num_vlm_layers"]:
        raise ValueError(
            "num_expert_layers must be <= 0 or equal num_vlm_layers (LeRobot 0.4.4 fails otherwise)"
        )
    if policy["num_vlm_layers"] > backbone.text_layers:
        raise ValueError(
            f"num_vlm_layers {policy['num_vlm_layers']} > backbone text layers {backbone.text_layers}"
        )


def _write_weights(
    path: Path, policy: Mapping[str, object], backbone_cfg: Mapping[str, object], dtype: str, seed: int
) -> None:
    """Random ``model.safetensors``; cross-attention k/v stay float32 like smolvla_base's."""
    shapes = state_dict_shapes(policy, backbone_cfg)
    cross_kv = _cross_kv_keys(shapes)

    def dtype_of(key: str) -> torch.dtype:
        return torch.float32 if key in cross_kv else stored_dtype(key, dtype)

    write_safetensors_streaming(path, shapes, dtype_of, lambda key, shape: random_tensor(key, shape, seed))


def make_checkpoint(
    out_dir: str | Path,
    *,
    backbone: BackboneSpec,
    cameras: Sequence[str],
    image_shape: ImageShape,
    state_dim: int,
    action_dim: int,
    seed: int = 0,
    dtype: str = "float32",
    stats: UserStats | None = None,
    vlm_folder: str = "vlm",
    truncation_side: str = "right",
    fps: float | None = None,
    **config_overrides: object,
) -> Path:
    """Write a random-weight SmolVLA checkpoint for ``backbone`` into ``out_dir`` and return ``out_dir``.

    The backbone folder is ``out_dir/<vlm_folder>``; ``vlm_model_name`` (and the tokenizer step's
    ``tokenizer_name``) is that bare folder name, relative to the checkpoint directory.
    ``config_overrides`` are SmolVLA config fields. ``fps`` is written (as ``"fps"``) only when given:
    it is not a LeRobot field, and LeRobot's own config parser rejects unknown fields.
    """
    if not cameras:
        raise ValueError("at least one camera is needed (SmolVLA raises without images)")
    checkpoint = Path(out_dir)
    checkpoint.mkdir(parents=True, exist_ok=True)
    image_shapes = _image_shapes(cameras, image_shape)
    config_overrides.setdefault("resize_imgs_with_padding", [backbone.image_size, backbone.image_size])
    config_overrides.setdefault("vlm_model_name", vlm_folder)
    policy = policy_config(image_shapes, state_dim, action_dim, **config_overrides)
    _check_policy_fits_backbone(policy, backbone)

    backbone_cfg = write_backbone_folder(checkpoint / vlm_folder, backbone, truncation_side)
    if fps is not None:
        policy["fps"] = float(fps)
    write_json(checkpoint / "config.json", policy)
    _write_weights(checkpoint / "model.safetensors", policy, backbone_cfg, dtype, seed)

    expected = {STATE_KEY: (state_dim,), ACTION_KEY: (action_dim,)}
    expected.update({key: (3, 1, 1) for key in image_shapes})
    defaults = default_stats(image_shapes, state_dim, action_dim, seed)
    write_processors(checkpoint, policy, complete_stats(stats or {}, defaults, expected))
    return checkpoint


def make_tiny_checkpoint(
    out_dir: str | Path,
    *,
    cameras: Sequence[str] = ("top", "wrist"),
    image_shape: ImageShape = (3, 48, 64),
    state_dim: int = 6,
    action_dim: int = 6,
    seed: int = 0,
    stats: UserStats | None = None,
    backbone: BackboneSpec = TINY_BACKBONE,
    dtype: str = "float32",
    truncation_side: str = "right",
    fps: float | None = None,
    **config_overrides: object,
) -> Path:
    """A tiny random SmolVLA checkpoint (about 0.5 M parameters by default) for tests; returns its directory.

    ``cameras``: names (``"top"``) or full keys (``"observation.images.top"``), in prefix order.
    ``image_shape``: one (3, H, W) for all cameras, one per camera, or a mapping camera -> shape.
    ``stats``: ``{feature: {"mean": ..., "std": ...}}``; missing entries get deterministic defaults.
    ``backbone``: for example ``dataclasses.replace(TINY_BACKBONE, text_layers=8)``. Other keyword arguments
    are SmolVLA config fields; ``num_vlm_layers`` defaults to 4 of the 6 text layers (truncation exercised).
    """
    config_overrides.setdefault("num_vlm_layers", min(4, backbone.text_layers))
    return make_checkpoint(
        out_dir,
        backbone=backbone,
        cameras=cameras,
        image_shape=image_shape,
        state_dim=state_dim,
        action_dim=action_dim,
        seed=seed,
        dtype=dtype,
        stats=stats,
        vlm_folder="tiny_vlm",
        truncation_side=truncation_side,
        fps=fps,
        **config_overrides,
    )


def make_real_size_checkpoint(
    out_dir: str | Path,
    seed: int = 0,
    dtype: str = "float32",
    *,
    cameras: Sequence[str] = ("camera1", "camera2", "camera3"),
    image_shape: ImageShape = (3, 256, 256),
    state_dim: int = 6,
    action_dim: int = 6,
    stats: UserStats | None = None,
    fps: float | None = None,
    **config_overrides: object,
) -> Path:
    """The exact ``lerobot/smolvla_base`` architecture with random weights (450,046,176 parameters).

    Written one tensor at a time. ``dtype="float32"`` stores everything in float32 (1.8 GB); ``"bfloat16"``
    stores smolvla_base's mixed layout (906,639,456 bytes of tensors). Features default to smolvla_base's;
    the config is smolvla_base's except ``load_vlm_weights=false`` and the local ``vlm_model_name``.
    """
    config_overrides.setdefault("pad_language_to", "max_length")
    config_overrides.setdefault("prefix_length", 0)
    config_overrides.setdefault("num_expert_layers", 0)
    policy = policy_config(_image_shapes(cameras, image_shape), state_dim, action_dim, **config_overrides)
    shapes = state_dict_shapes(policy, backbone_config(SMOLVLM2_500M, 49280, 49190))
    total = count_parameters(shapes)
    if total != REAL_SIZE_PARAMETERS or len(shapes) != 500:
        raise AssertionError(
            f"real-size layout has {total:,} parameters in {len(shapes)} tensors, "
            f"expected {REAL_SIZE_PARAMETERS:,} in 500 (check config overrides)"
        )
    return make_checkpoint(
        out_dir,
        backbone=SMOLVLM2_500M,
        cameras=cameras,
        image_shape=image_shape,
        state_dim=state_dim,
        action_dim=action_dim,
        seed=seed,
        dtype=dtype,
        stats=stats,
        vlm_folder="SmolVLM2-500M-Video-Instruct",
        truncation_side="left",
        fps=fps,
        **config_overrides,
    )
