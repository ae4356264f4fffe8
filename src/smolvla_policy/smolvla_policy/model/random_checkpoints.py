"""Offline builders of random-weight SmolVLA checkpoints in LeRobot 0.4.4's exact on-disk layout.

A generated checkpoint directory holds what ``SmolVLAPolicy.save_pretrained`` and the processor pipelines
write (``config.json``, ``model.safetensors``, ``policy_preprocessor.json`` + normaliser state,
``policy_postprocessor.json`` + unnormaliser state) plus a local backbone folder (SmolVLM config, a byte-level
BPE tokenizer trained here in milliseconds, the processor JSON files) that ``vlm_model_name`` names relative
to the checkpoint directory. Nothing is downloaded; weights are random but deterministic for a given seed.

- :func:`make_tiny_checkpoint`: a small model for tests, any cameras / image sizes / state and action sizes.
- :func:`make_real_size_checkpoint`: the exact ``lerobot/smolvla_base`` architecture (SmolVLM2-500M truncated
  to 16 text layers plus the action expert; 450,046,176 parameters), for benchmarks.
- :func:`state_dict_shapes`: every weight name and shape implied by a policy config and a backbone config.

Command line: ``python -m smolvla_policy.model.random_checkpoints tiny|real-size OUT_DIR [options]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REAL_SIZE_PARAMETERS = 450_046_176
"""Parameter count of ``lerobot/smolvla_base`` (lm_head included), 500 tensors."""

STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_KEY_PREFIX = "observation.images."
PREPROCESSOR_STATE_FILE = "policy_preprocessor_step_5_normalizer_processor.safetensors"
POSTPROCESSOR_STATE_FILE = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
NORMALIZATION_EPS = 1e-8

VLM_PREFIX = "model.vlm_with_expert.vlm."
EXPERT_PREFIX = "model.vlm_with_expert.lm_expert."

# Special tokens of the SmolLM2 / SmolVLM2 tokenizer, in id order.
BASE_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
GLOBAL_IMAGE_TOKEN = "<global-img>"
IMAGE_TOKEN = "<image>"
END_OF_UTTERANCE_TOKEN = "<end_of_utterance>"

# A few robot instructions: enough text for the BPE trainer to learn some merges.
_TOKENIZER_CORPUS = (
    "pick up the red cube",
    "pick up the blue cube and place it in the box",
    "open the top drawer",
    "close the bottom drawer",
    "stack the blue cube on the green plate",
    "put the green block on the red block",
    "move the arm to the left of the cup",
    "grasp the pen and put it in the cup",
    "push the red button",
    "fold the towel in half",
    "place the cup on the plate",
    "pick the lego brick and put it in the bin",
    "turn the knob to the right",
    "slide the box to the right side of the table",
    "pour the water into the bowl",
)

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


@dataclass(frozen=True)
class BackboneSpec:
    """Shape of a SmolVLM backbone (text = Llama, vision = SigLIP-like) and of its tokenizer."""

    text_hidden: int
    text_intermediate: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    head_dim: int
    vision_hidden: int
    vision_intermediate: int
    vision_layers: int
    vision_heads: int
    image_size: int
    patch_size: int
    scale_factor: int
    max_position_embeddings: int = 8192
    rope_theta: float = 100000.0
    text_dtype: str | None = None
    base_vocab_size: int | None = None
    """Size of the plain BPE vocabulary; None keeps what the trainer learns (a few hundred)."""
    reserved_tokens: int = 0
    """Number of ``<|reserved_special_token_i|>`` tokens between ``<image>`` and ``<end_of_utterance>``."""


TINY_BACKBONE = BackboneSpec(
    text_hidden=64,
    text_intermediate=160,
    text_layers=6,
    text_heads=4,
    text_kv_heads=2,
    head_dim=16,
    vision_hidden=32,
    vision_intermediate=64,
    vision_layers=2,
    vision_heads=2,
    image_size=64,
    patch_size=8,
    scale_factor=4,
    max_position_embeddings=512,
)
"""Default tiny backbone: 8x8 patches per image, pixel-shuffled into 4 tokens per camera."""

SMOLVLM2_500M = BackboneSpec(
    text_hidden=960,
    text_intermediate=2560,
    text_layers=32,
    text_heads=15,
    text_kv_heads=5,
    head_dim=64,
    vision_hidden=768,
    vision_intermediate=3072,
    vision_layers=12,
    vision_heads=12,
    image_size=512,
    patch_size=16,
    scale_factor=4,
    max_position_embeddings=8192,
    text_dtype="bfloat16",
    base_vocab_size=49152,
    reserved_tokens=88,
)
"""SmolVLM2-500M-Video-Instruct: vocabulary 49280, 64 image tokens per 512x512 image."""


# ----------------------------------------------------------------------------------------------------
# Tokenizer and backbone folder


def _added_special_tokens(reserved_tokens: int) -> list[str]:
    rows = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    reserved = [f"<|reserved_special_token_{i}|>" for i in range(reserved_tokens)]
    return [GLOBAL_IMAGE_TOKEN, *rows, FAKE_IMAGE_TOKEN, IMAGE_TOKEN, *reserved, END_OF_UTTERANCE_TOKEN]


def build_tokenizer(base_vocab_size: int | None = None, reserved_tokens: int = 0):
    """Train a byte-level BPE tokenizer laid out like SmolVLM2's (not its vocabulary) and return it.

    Ids 0-2 are ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``; then the 256 byte symbols and the learned
    merges; with ``base_vocab_size`` the vocabulary is filled up to that size with unreachable placeholder
    entries; then the image/utterance special tokens in SmolVLM2's order. No BOS/EOS is ever added.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        min_frequency=2,
        special_tokens=list(BASE_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TOKENIZER_CORPUS, trainer)
    if base_vocab_size is not None:
        spec = json.loads(tokenizer.to_str())
        vocab: dict[str, int] = spec["model"]["vocab"]
        if len(vocab) > base_vocab_size:
            raise ValueError(f"base_vocab_size={base_vocab_size} is smaller than the trained vocabulary")
        for index in range(len(vocab), base_vocab_size):
            vocab[f"<|placeholder_{index}|>"] = index  # never produced: no merge builds it
        tokenizer = Tokenizer.from_str(json.dumps(spec))
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in _added_special_tokens(reserved_tokens)]
    )
    return tokenizer


def _token_entry(content: str) -> dict[str, object]:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def tokenizer_config(tokenizer, truncation_side: str = "right") -> dict[str, object]:
    """``tokenizer_config.json`` of a SmolVLM2-style tokenizer (extra special tokens, pad ``<|im_end|>``)."""
    special = list(BASE_SPECIAL_TOKENS) + _special_tokens_after_base(tokenizer)
    extra = {
        "end_of_utterance_token": END_OF_UTTERANCE_TOKEN,
        "fake_image_token": FAKE_IMAGE_TOKEN,
        "global_image_token": GLOBAL_IMAGE_TOKEN,
        "image_token": IMAGE_TOKEN,
    }
    return {
        "added_tokens_decoder": {str(tokenizer.token_to_id(t)): _token_entry(t) for t in special},
        "additional_special_tokens": [FAKE_IMAGE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE_TOKEN],
        "bos_token": "<|im_start|>",
        "clean_up_tokenization_spaces": False,
        "end_of_utterance_token": END_OF_UTTERANCE_TOKEN,
        "eos_token": END_OF_UTTERANCE_TOKEN,
        "extra_special_tokens": extra,
        "fake_image_token": FAKE_IMAGE_TOKEN,
        "global_image_token": GLOBAL_IMAGE_TOKEN,
        "image_token": IMAGE_TOKEN,
        "model_max_length": 8192,
        "pad_token": "<|im_end|>",
        "padding_side": "right",
        "processor_class": "SmolVLMProcessor",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "truncation_side": truncation_side,
        "unk_token": "<|endoftext|>",
    }


def _special_tokens_after_base(tokenizer) -> list[str]:
    reserved = 0
    while tokenizer.token_to_id(f"<|reserved_special_token_{reserved}|>") is not None:
        reserved += 1
    return _added_special_tokens(reserved)


def special_tokens_map() -> dict[str, object]:
    return {
        "additional_special_tokens": [FAKE_IMAGE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE_TOKEN],
        "bos_token": "<|im_start|>",
        "end_of_utterance_token": END_OF_UTTERANCE_TOKEN,
        "eos_token": END_OF_UTTERANCE_TOKEN,
        "fake_image_token": FAKE_IMAGE_TOKEN,
        "global_image_token": GLOBAL_IMAGE_TOKEN,
        "image_token": IMAGE_TOKEN,
        "pad_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
    }


def backbone_config(spec: BackboneSpec, vocab_size: int, image_token_id: int) -> dict[str, object]:
    """The SmolVLM ``config.json`` written out in full (transformers' defaults are not SmolVLM2's)."""
    text: dict[str, object] = {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "head_dim": spec.head_dim,
        "hidden_act": "silu",
        "hidden_size": spec.text_hidden,
        "initializer_range": 0.02,
        "intermediate_size": spec.text_intermediate,
        "max_position_embeddings": spec.max_position_embeddings,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": spec.text_heads,
        "num_hidden_layers": spec.text_layers,
        "num_key_value_heads": spec.text_kv_heads,
        "pad_token_id": 2,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": spec.rope_theta,
        "tie_word_embeddings": False,
        "use_cache": True,
        "vocab_size": vocab_size,
    }
    if spec.text_dtype is not None:
        text["torch_dtype"] = spec.text_dtype
    vision = {
        "attention_dropout": 0.0,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": spec.vision_hidden,
        "image_size": spec.image_size,
        "initializer_range": 0.02,
        "intermediate_size": spec.vision_intermediate,
        "layer_norm_eps": 1e-06,
        "model_type": "smolvlm_vision",
        "num_attention_heads": spec.vision_heads,
        "num_channels": 3,
        "num_hidden_layers": spec.vision_layers,
        "patch_size": spec.patch_size,
    }
    return {
        "architectures": ["SmolVLMForConditionalGeneration"],
        "image_token_id": image_token_id,
        "model_type": "smolvlm",
        "pad_token_id": 2,
        "scale_factor": spec.scale_factor,
        "text_config": text,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vision_config": vision,
    }


def image_tokens_per_camera(spec: BackboneSpec) -> int:
    grid = spec.image_size // spec.patch_size
    return (grid // spec.scale_factor) ** 2


def _check_backbone(spec: BackboneSpec) -> None:
    if spec.image_size % spec.patch_size:
        raise ValueError(f"image_size {spec.image_size} is not a multiple of patch_size {spec.patch_size}")
    if (spec.image_size // spec.patch_size) % spec.scale_factor:
        raise ValueError(
            f"the patch grid side {spec.image_size // spec.patch_size} must be divisible by "
            f"scale_factor {spec.scale_factor} (pixel shuffle)"
        )
    if spec.text_heads % spec.text_kv_heads:
        raise ValueError(
            f"text_heads {spec.text_heads} must be a multiple of text_kv_heads {spec.text_kv_heads}"
        )
    if spec.head_dim % 2:
        raise ValueError(f"head_dim must be even (RoPE), got {spec.head_dim}")


def write_backbone_folder(
    folder: Path, spec: BackboneSpec, truncation_side: str = "right"
) -> dict[str, object]:
    """Write a weight-less SmolVLM folder (config, tokenizer, processor files); return its config dict."""
    _check_backbone(spec)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(spec.base_vocab_size, spec.reserved_tokens)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    config = backbone_config(spec, vocab_size, tokenizer.token_to_id(IMAGE_TOKEN))
    tokenizer.save(str(folder / "tokenizer.json"))
    _write_json(folder / "config.json", config)
    _write_json(folder / "tokenizer_config.json", tokenizer_config(tokenizer, truncation_side))
    _write_json(folder / "special_tokens_map.json", special_tokens_map())
    image_processor = {
        "do_convert_rgb": True,
        "do_image_splitting": True,
        "do_normalize": True,
        "do_pad": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SmolVLMImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "max_image_size": {"longest_edge": spec.image_size},
        "processor_class": "SmolVLMProcessor",
        "resample": 1,
        "rescale_factor": 1 / 255,
        "size": {"longest_edge": 4 * spec.image_size},
    }
    _write_json(folder / "preprocessor_config.json", image_processor)
    processor = {"image_seq_len": image_tokens_per_camera(spec), "processor_class": "SmolVLMProcessor"}
    _write_json(folder / "processor_config.json", processor)
    video_processor = {
        "crop_size": None,
        "data_format": "channels_first",
        "default_to_square": True,
        "device": None,
        "do_center_crop": None,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_pad": True,
        "do_rescale": True,
        "do_resize": True,
        "do_sample_frames": False,
        "fps": None,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "input_data_format": None,
        "max_image_size": {"longest_edge": 364},
        "num_frames": None,
        "pad_size": None,
        "processor_class": "SmolVLMProcessor",
        "resample": 1,
        "rescale_factor": 1 / 255,
        "return_metadata": False,
        "size": {"longest_edge": 1456},
        "video_metadata": None,
        "video_processor_type": "SmolVLMVideoProcessor",
    }
    _write_json(folder / "video_preprocessor_config.json", video_processor)
    return config


# ----------------------------------------------------------------------------------------------------
# Policy config and the state-dict layout


def image_feature_key(camera: str) -> str:
    """``"top"`` -> ``"observation.images.top"``; a full ``observation.*`` key is kept as is."""
    return camera if camera.startswith("observation.") else IMAGE_KEY_PREFIX + camera


def _image_shapes(
    cameras: Sequence[str], image_shape: Sequence[int] | Mapping[str, Sequence[int]] | Sequence[Sequence[int]]
) -> dict[str, list[int]]:
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


def policy_config(
    image_shapes: Mapping[str, Sequence[int]], state_dim: int, action_dim: int, **overrides: object
) -> dict[str, object]:
    """LeRobot's SmolVLA ``config.json`` content: every field, LeRobot's defaults unless overridden."""
    unknown = sorted(set(overrides) - set(SMOLVLA_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown SmolVLA config field(s) {unknown}; known: {sorted(SMOLVLA_DEFAULTS)}")
    if state_dim < 1 or action_dim < 1:
        raise ValueError(f"state_dim and action_dim must be >= 1, got {state_dim} and {action_dim}")
    input_features: dict[str, object] = {
        k: {"type": "VISUAL", "shape": list(s)} for k, s in image_shapes.items()
    }
    input_features[STATE_KEY] = {"type": "STATE", "shape": [state_dim]}
    config: dict[str, object] = {
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


def expert_intermediate_size(hidden: int, multiplier: float = 4, multiple_of: int = 256) -> int:
    """The action expert's MLP width: 2/3 of the hidden size, times 4, rounded up to a multiple of 256."""
    width = int(multiplier * int(2 * hidden / 3))
    return multiple_of * math.ceil(width / multiple_of)


def state_dict_shapes(
    policy: Mapping[str, object], backbone: Mapping[str, object]
) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of a SmolVLA ``model.safetensors`` for these configs (policy, SmolVLM)."""
    text, vision = backbone["text_config"], backbone["vision_config"]
    th, heads, kv_heads = text["hidden_size"], text["num_attention_heads"], text["num_key_value_heads"]
    head_dim = text.get("head_dim") or th // heads
    vocab, ti = text["vocab_size"], text["intermediate_size"]
    vh, vi, patch = vision["hidden_size"], vision["intermediate_size"], vision["patch_size"]
    n_patches = (vision["image_size"] // patch) ** 2
    sf = backbone["scale_factor"]

    vlm_layers = text["num_hidden_layers"]
    if policy["num_vlm_layers"] > 0:
        vlm_layers = min(vlm_layers, policy["num_vlm_layers"])
    expert_layers = policy["num_expert_layers"] if policy["num_expert_layers"] > 0 else vlm_layers
    eh = int(th * policy["expert_width_multiplier"])
    ei = expert_intermediate_size(eh)
    every = policy["self_attn_every_n_layers"]
    cross = "cross" in str(policy["attention_mode"])

    shapes: dict[str, tuple[int, ...]] = {}
    vis = VLM_PREFIX + "model.vision_model."
    shapes[vis + "embeddings.patch_embedding.weight"] = (vh, 3, patch, patch)
    shapes[vis + "embeddings.patch_embedding.bias"] = (vh,)
    shapes[vis + "embeddings.position_embedding.weight"] = (n_patches, vh)
    for i in range(vision["num_hidden_layers"]):
        layer = f"{vis}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{layer}self_attn.{proj}.weight"] = (vh, vh)
            shapes[f"{layer}self_attn.{proj}.bias"] = (vh,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{layer}{norm}.weight"] = (vh,)
            shapes[f"{layer}{norm}.bias"] = (vh,)
        shapes[f"{layer}mlp.fc1.weight"] = (vi, vh)
        shapes[f"{layer}mlp.fc1.bias"] = (vi,)
        shapes[f"{layer}mlp.fc2.weight"] = (vh, vi)
        shapes[f"{layer}mlp.fc2.bias"] = (vh,)
    shapes[vis + "post_layernorm.weight"] = (vh,)
    shapes[vis + "post_layernorm.bias"] = (vh,)
    shapes[VLM_PREFIX + "model.connector.modality_projection.proj.weight"] = (th, vh * sf * sf)

    txt = VLM_PREFIX + "model.text_model."
    shapes[txt + "embed_tokens.weight"] = (vocab, th)
    for i in range(vlm_layers):
        _llama_layer(shapes, f"{txt}layers.{i}.", th, ti, heads, kv_heads, head_dim, kv_in=th)
    shapes[txt + "norm.weight"] = (th,)
    shapes[VLM_PREFIX + "lm_head.weight"] = (vocab, th)

    for i in range(expert_layers):
        cross_layer = cross and every > 0 and i % every != 0
        kv_in = kv_heads * head_dim if cross_layer else eh
        _llama_layer(shapes, f"{EXPERT_PREFIX}layers.{i}.", eh, ei, heads, kv_heads, head_dim, kv_in=kv_in)
    shapes[EXPERT_PREFIX + "norm.weight"] = (eh,)

    for name, (out_dim, in_dim) in {
        "state_proj": (th, policy["max_state_dim"]),
        "action_in_proj": (eh, policy["max_action_dim"]),
        "action_out_proj": (policy["max_action_dim"], eh),
        "action_time_mlp_in": (eh, 2 * eh),
        "action_time_mlp_out": (eh, eh),
    }.items():
        shapes[f"model.{name}.weight"] = (out_dim, in_dim)
        shapes[f"model.{name}.bias"] = (out_dim,)
    return shapes


def _llama_layer(
    shapes: dict[str, tuple[int, ...]],
    prefix: str,
    hidden: int,
    intermediate: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    kv_in: int,
) -> None:
    shapes[prefix + "self_attn.q_proj.weight"] = (heads * head_dim, hidden)
    shapes[prefix + "self_attn.k_proj.weight"] = (kv_heads * head_dim, kv_in)
    shapes[prefix + "self_attn.v_proj.weight"] = (kv_heads * head_dim, kv_in)
    shapes[prefix + "self_attn.o_proj.weight"] = (hidden, heads * head_dim)
    shapes[prefix + "mlp.gate_proj.weight"] = (intermediate, hidden)
    shapes[prefix + "mlp.up_proj.weight"] = (intermediate, hidden)
    shapes[prefix + "mlp.down_proj.weight"] = (hidden, intermediate)
    shapes[prefix + "input_layernorm.weight"] = (hidden,)
    shapes[prefix + "post_attention_layernorm.weight"] = (hidden,)


def count_parameters(shapes: Mapping[str, Sequence[int]]) -> int:
    return sum(math.prod(s) for s in shapes.values())


def stored_dtype(key: str, layout: str) -> torch.dtype:
    """Dtype of a tensor in the file. ``"bfloat16"`` reproduces smolvla_base's mixed layout: bf16 everywhere
    except the five projection layers (and the expert's cross-attention k/v, handled by the caller)."""
    if layout == "float32":
        return torch.float32
    if layout != "bfloat16":
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {layout!r}")
    if key.startswith("model.") and not key.startswith("model.vlm_with_expert."):
        return torch.float32
    return torch.bfloat16


def _cross_kv_keys(shapes: Mapping[str, Sequence[int]]) -> set[str]:
    """Expert k/v projections that take the cached VLM keys/values (square, kv_heads*head_dim wide)."""
    keys = set()
    for key, shape in shapes.items():
        if key.startswith(EXPERT_PREFIX) and key.endswith(("k_proj.weight", "v_proj.weight")):
            q_shape = shapes[key.rsplit("self_attn.", 1)[0] + "self_attn.q_proj.weight"]
            if shape[1] != q_shape[1]:
                keys.add(key)
    return keys


# ----------------------------------------------------------------------------------------------------
# Weights


def random_tensor(key: str, shape: Sequence[int], seed: int) -> torch.Tensor:
    """Deterministic random float32 weight for one tensor, independent of the other tensors.

    Norm weights are ~1 and biases ~0 (both slightly perturbed so that a loader that skips them is caught);
    embeddings use std 0.02; other matrices std 1/sqrt(fan_in), which keeps activations of order one.
    """
    generator = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63))
    values = torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    name = key.rsplit(".", 2)[-2]
    if key.endswith(".weight") and len(shape) == 1:  # RMSNorm / LayerNorm scale
        return values.mul_(0.05).add_(1.0)
    if key.endswith(".bias"):
        return values.mul_(0.02)
    if name in ("embed_tokens", "position_embedding", "lm_head"):
        return values.mul_(0.02)
    return values.mul_(1.0 / math.sqrt(math.prod(shape[1:])))


_SAFETENSORS_DTYPE = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def write_safetensors_streaming(
    path: Path,
    shapes: Mapping[str, Sequence[int]],
    dtype_of: Callable[[str], torch.dtype],
    make_tensor: Callable[[str, Sequence[int]], torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> int:
    """Write a safetensors file one tensor at a time (peak memory: the largest tensor); return the data size.

    The header is computed from the shapes first, then each tensor is created, converted and written.
    """
    order = sorted(shapes, key=lambda k: (-torch.empty((), dtype=dtype_of(k)).element_size(), k))
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for key in order:
        dtype = dtype_of(key)
        size = math.prod(shapes[key]) * torch.empty((), dtype=dtype).element_size()
        header[key] = {
            "dtype": _SAFETENSORS_DTYPE[dtype],
            "shape": list(shapes[key]),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for key in order:
            tensor = make_tensor(key, shapes[key]).to(dtype_of(key)).contiguous()
            if tuple(tensor.shape) != tuple(shapes[key]):
                raise RuntimeError(
                    f"tensor {key} has shape {tuple(tensor.shape)}, expected {tuple(shapes[key])}"
                )
            f.write(tensor.view(torch.uint8).numpy().data if tensor.numel() else b"")
            del tensor
    tmp.replace(path)
    return offset


# ----------------------------------------------------------------------------------------------------
# Processor pipelines and dataset statistics


def default_stats(
    image_shapes: Mapping[str, Sequence[int]], state_dim: int, action_dim: int, seed: int
) -> dict[str, dict[str, np.ndarray]]:
    """Plausible dataset statistics (degree-like joint values), stored like LeRobot's."""
    rng = np.random.default_rng(seed + 7919)
    stats: dict[str, dict[str, np.ndarray]] = {}
    for key, dim in ((STATE_KEY, state_dim), (ACTION_KEY, action_dim)):
        stats[key] = {"mean": rng.uniform(-30.0, 30.0, dim), "std": rng.uniform(5.0, 40.0, dim)}
    for key in image_shapes:
        stats[key] = {"mean": rng.uniform(0.3, 0.6, (3, 1, 1)), "std": rng.uniform(0.15, 0.3, (3, 1, 1))}
    return stats


def complete_stats(
    stats: Mapping[str, Mapping[str, Sequence[float] | np.ndarray]],
    defaults: Mapping[str, Mapping[str, np.ndarray]],
    expected_shapes: Mapping[str, tuple[int, ...]],
) -> dict[str, dict[str, np.ndarray]]:
    """Merge user stats over the defaults, check shapes, and derive min/max (and q01/q99 for vectors)."""
    unknown = sorted(set(stats) - set(expected_shapes))
    if unknown:
        raise ValueError(f"stats for unknown feature(s) {unknown}; features: {sorted(expected_shapes)}")
    merged: dict[str, dict[str, np.ndarray]] = {}
    for key, shape in expected_shapes.items():
        entry = {name: np.asarray(v, dtype=np.float32) for name, v in defaults[key].items()}
        entry.update({name: np.asarray(v, dtype=np.float32) for name, v in stats.get(key, {}).items()})
        for name, value in entry.items():
            if value.shape != shape:
                raise ValueError(f"stats[{key!r}][{name!r}] has shape {value.shape}, expected {shape}")
        if np.any(entry["std"] <= 0):
            raise ValueError(f"stats[{key!r}]['std'] must be positive, got {entry['std']}")
        mean, std = entry["mean"], entry["std"]
        if len(shape) == 3:  # image statistics in [0, 1]
            entry.setdefault("min", np.zeros(shape, np.float32))
            entry.setdefault("max", np.ones(shape, np.float32))
        else:
            entry.setdefault("min", mean - 3 * std)
            entry.setdefault("max", mean + 3 * std)
            entry.setdefault("q01", mean - 2.326 * std)
            entry.setdefault("q99", mean + 2.326 * std)
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


def write_processors(
    checkpoint: Path, policy: Mapping[str, object], stats: Mapping[str, Mapping[str, np.ndarray]]
) -> None:
    """Write LeRobot's SmolVLA pre/post-processor pipelines (JSON + normaliser state files)."""
    from safetensors.torch import save_file

    features = {**policy["input_features"], **policy["output_features"]}
    norm_map = policy["normalization_mapping"]
    preprocessor = {
        "name": "policy_preprocessor",
        "steps": [
            {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
            {"registry_name": "to_batch_processor", "config": {}},
            {"registry_name": "smolvla_new_line_processor", "config": {}},
            {
                "registry_name": "tokenizer_processor",
                "config": {
                    "max_length": policy["tokenizer_max_length"],
                    "task_key": "task",
                    "padding_side": "right",
                    "padding": policy["pad_language_to"],
                    "truncation": True,
                    "tokenizer_name": policy["vlm_model_name"],
                },
            },
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
            {
                "registry_name": "normalizer_processor",
                "config": {"eps": NORMALIZATION_EPS, "features": features, "norm_map": norm_map},
                "state_file": PREPROCESSOR_STATE_FILE,
            },
        ],
    }
    postprocessor = {
        "name": "policy_postprocessor",
        "steps": [
            {
                "registry_name": "unnormalizer_processor",
                "config": {
                    "eps": NORMALIZATION_EPS,
                    "features": {ACTION_KEY: policy["output_features"][ACTION_KEY]},
                    "norm_map": norm_map,
                },
                "state_file": POSTPROCESSOR_STATE_FILE,
            },
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
        ],
    }
    _write_json(checkpoint / "policy_preprocessor.json", preprocessor, indent=2)
    _write_json(checkpoint / "policy_postprocessor.json", postprocessor, indent=2)
    flat = _flat_stats(stats, list(features))
    save_file(flat, str(checkpoint / PREPROCESSOR_STATE_FILE))
    save_file(flat, str(checkpoint / POSTPROCESSOR_STATE_FILE))


# ----------------------------------------------------------------------------------------------------
# Public builders


def make_checkpoint(
    out_dir: str | Path,
    *,
    backbone: BackboneSpec,
    cameras: Sequence[str],
    image_shape: Sequence[int] | Mapping[str, Sequence[int]] | Sequence[Sequence[int]],
    state_dim: int,
    action_dim: int,
    seed: int = 0,
    dtype: str = "float32",
    stats: Mapping[str, Mapping[str, Sequence[float] | np.ndarray]] | None = None,
    vlm_folder: str = "vlm",
    truncation_side: str = "right",
    fps: float | None = None,
    **config_overrides: object,
) -> Path:
    """Write a random-weight SmolVLA checkpoint for ``backbone`` into ``out_dir`` and return ``out_dir``.

    The backbone folder is ``out_dir/<vlm_folder>`` and ``vlm_model_name`` (and the tokenizer step's
    ``tokenizer_name``) is that bare folder name, relative to the checkpoint directory.
    ``config_overrides`` are SmolVLA config fields (chunk_size, n_action_steps, num_steps, num_vlm_layers,
    self_attn_every_n_layers, tokenizer_max_length, pad_language_to, add_image_special_tokens, ...).
    ``fps``: the control rate the policy was trained at; LeRobot's config has no such field, so it is only
    written (as ``"fps"``) when given, and LeRobot's own config parser rejects unknown fields.
    """
    if not cameras:
        raise ValueError("at least one camera is needed (SmolVLA raises without images)")
    checkpoint = Path(out_dir)
    checkpoint.mkdir(parents=True, exist_ok=True)
    image_shapes = _image_shapes(cameras, image_shape)
    size = backbone.image_size
    config_overrides.setdefault("resize_imgs_with_padding", [size, size])
    config_overrides.setdefault("vlm_model_name", vlm_folder)
    policy = policy_config(image_shapes, state_dim, action_dim, **config_overrides)
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

    backbone_cfg = write_backbone_folder(checkpoint / vlm_folder, backbone, truncation_side)
    if fps is not None:
        policy["fps"] = float(fps)
    _write_json(checkpoint / "config.json", policy)

    shapes = state_dict_shapes(policy, backbone_cfg)
    cross_kv = _cross_kv_keys(shapes)

    def dtype_of(key: str) -> torch.dtype:
        return torch.float32 if key in cross_kv else stored_dtype(key, dtype)

    write_safetensors_streaming(
        checkpoint / "model.safetensors", shapes, dtype_of, lambda key, shape: random_tensor(key, shape, seed)
    )

    expected = {STATE_KEY: (state_dim,), ACTION_KEY: (action_dim,)}
    expected.update({key: (3, 1, 1) for key in image_shapes})
    all_stats = complete_stats(
        stats or {}, default_stats(image_shapes, state_dim, action_dim, seed), expected
    )
    write_processors(checkpoint, policy, all_stats)
    return checkpoint


def make_tiny_checkpoint(
    out_dir: str | Path,
    *,
    cameras: Sequence[str] = ("top", "wrist"),
    image_shape: Sequence[int] | Mapping[str, Sequence[int]] | Sequence[Sequence[int]] = (3, 48, 64),
    state_dim: int = 6,
    action_dim: int = 6,
    seed: int = 0,
    stats: Mapping[str, Mapping[str, Sequence[float] | np.ndarray]] | None = None,
    backbone: BackboneSpec = TINY_BACKBONE,
    dtype: str = "float32",
    truncation_side: str = "right",
    fps: float | None = None,
    **config_overrides: object,
) -> Path:
    """A tiny random SmolVLA checkpoint (about 0.5 M parameters by default) for tests; returns its directory.

    ``cameras``: names (``"top"``) or full keys (``"observation.images.top"``), in prefix order.
    ``image_shape``: one (3, H, W) for all cameras, a sequence with one per camera, or a mapping camera ->
    shape. ``stats``: ``{feature: {"mean": ..., "std": ...}}`` for ``observation.state`` / ``action`` (and
    images); missing entries get deterministic defaults. ``backbone``: for example
    ``dataclasses.replace(TINY_BACKBONE, text_layers=8)``. Other keyword arguments are SmolVLA config fields;
    by default ``num_vlm_layers`` keeps 4 of the backbone's 6 text layers (so truncation is exercised),
    everything else is LeRobot's default (chunk_size 50, num_steps 10).
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
    image_shape: Sequence[int] | Mapping[str, Sequence[int]] | Sequence[Sequence[int]] = (3, 256, 256),
    state_dim: int = 6,
    action_dim: int = 6,
    stats: Mapping[str, Mapping[str, Sequence[float] | np.ndarray]] | None = None,
    fps: float | None = None,
    **config_overrides: object,
) -> Path:
    """The exact ``lerobot/smolvla_base`` architecture with random weights (450,046,176 parameters).

    Written one tensor at a time (never two copies in memory). ``dtype="float32"`` stores everything in
    float32 (1.8 GB); ``"bfloat16"`` stores smolvla_base's mixed layout (906,639,456 bytes of tensors).
    Features default to smolvla_base's (3 cameras of 256x256, state 6, action 6); the config is smolvla_base's
    except ``load_vlm_weights=false`` (the backbone folder has no weights) and the local ``vlm_model_name``.
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


def _write_json(path: Path, data: object, indent: int = 4) -> None:
    path.write_text(json.dumps(data, indent=indent) + "\n")


# ----------------------------------------------------------------------------------------------------
# Command line


def _shape(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.lower().replace("x", ",").split(",") if p]
    if len(parts) == 2:
        parts = [3, *parts]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected HxW or 3xHxW, got {text!r}")
    return tuple(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="smolvla-make-checkpoint",
        description="Write a random-weight SmolVLA checkpoint in LeRobot 0.4.4's layout (offline).",
    )
    parser.add_argument("kind", choices=("tiny", "real-size"))
    parser.add_argument("out_dir", type=Path)
    parser.add_argument(
        "--cameras",
        nargs="+",
        help="camera names in prefix order (default: tiny top wrist; real-size camera1 camera2 camera3)",
    )
    parser.add_argument(
        "--image-shape", type=_shape, nargs="+", help="HxW (or 3xHxW), one for all or one per camera"
    )
    parser.add_argument("--state-dim", type=int, default=6)
    parser.add_argument("--action-dim", type=int, default=6)
    parser.add_argument("--chunk-size", type=int)
    parser.add_argument("--n-action-steps", type=int)
    parser.add_argument("--num-steps", type=int, help="denoising steps")
    parser.add_argument("--num-vlm-layers", type=int)
    parser.add_argument("--self-attn-every-n-layers", type=int)
    parser.add_argument("--tokenizer-max-length", type=int)
    parser.add_argument("--pad-language-to", choices=("longest", "max_length"))
    parser.add_argument("--add-image-special-tokens", action="store_true", default=None)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fps", type=float, help="write an 'fps' field (not a LeRobot field; LeRobot rejects it)"
    )
    parser.add_argument(
        "--stats", type=Path, help='JSON file {"observation.state": {"mean": [...], "std": [...]}, ...}'
    )
    args = parser.parse_args(argv)

    overrides = {
        name: getattr(args, name)
        for name in (
            "chunk_size",
            "n_action_steps",
            "num_steps",
            "num_vlm_layers",
            "self_attn_every_n_layers",
            "tokenizer_max_length",
            "pad_language_to",
            "add_image_special_tokens",
        )
        if getattr(args, name) is not None
    }
    if "chunk_size" in overrides and "n_action_steps" not in overrides:
        overrides["n_action_steps"] = overrides["chunk_size"]
    kwargs: dict[str, object] = dict(
        state_dim=args.state_dim, action_dim=args.action_dim, seed=args.seed, dtype=args.dtype
    )
    if args.cameras:
        kwargs["cameras"] = args.cameras
    if args.image_shape:
        kwargs["image_shape"] = args.image_shape[0] if len(args.image_shape) == 1 else args.image_shape
    if args.fps is not None:
        kwargs["fps"] = args.fps
    if args.stats:
        kwargs["stats"] = json.loads(args.stats.read_text())
    builder = make_tiny_checkpoint if args.kind == "tiny" else make_real_size_checkpoint
    path = builder(args.out_dir, **kwargs, **overrides)
    policy = json.loads((path / "config.json").read_text())
    backbone = json.loads((path / policy["vlm_model_name"] / "config.json").read_text())
    shapes = state_dict_shapes(policy, backbone)
    print(
        f"wrote {args.kind} SmolVLA checkpoint to {path}: {count_parameters(shapes):,} parameters in "
        f"{len(shapes)} tensors, cameras {list(policy['input_features'])[:-1]}, state {args.state_dim}, "
        f"action {args.action_dim}, chunk {policy['chunk_size']}, {policy['num_steps']} steps"
    )
    return 0


__all__ = [
    "REAL_SIZE_PARAMETERS",
    "SMOLVLA_DEFAULTS",
    "SMOLVLM2_500M",
    "TINY_BACKBONE",
    "BackboneSpec",
    "build_tokenizer",
    "count_parameters",
    "make_checkpoint",
    "make_real_size_checkpoint",
    "make_tiny_checkpoint",
    "policy_config",
    "state_dict_shapes",
    "write_safetensors_streaming",
]

if __name__ == "__main__":
    raise SystemExit(main())
