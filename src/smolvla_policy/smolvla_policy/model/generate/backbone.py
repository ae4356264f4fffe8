"""The SmolVLM backbone: its shape (:class:`BackboneSpec`), ``config.json`` and a weight-less folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .tokenizer import IMAGE_TOKEN, build_tokenizer, special_tokens_map, tokenizer_config


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

# SmolVLM2's video processor settings; nothing here depends on the backbone's shape.
_VIDEO_PROCESSOR: dict[str, object] = {
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


def write_json(path: Path, data: object, indent: int = 4) -> None:
    """Write ``data`` as indented JSON with a trailing newline (the layout of the generated files)."""
    path.write_text(json.dumps(data, indent=indent) + "\n")


def _text_config(spec: BackboneSpec, vocab_size: int) -> dict[str, object]:
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
    return text


def _vision_config(spec: BackboneSpec) -> dict[str, object]:
    return {
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


def backbone_config(spec: BackboneSpec, vocab_size: int, image_token_id: int) -> dict[str, object]:
    """The SmolVLM ``config.json`` written out in full (transformers' defaults are not SmolVLM2's)."""
    return {
        "architectures": ["SmolVLMForConditionalGeneration"],
        "image_token_id": image_token_id,
        "model_type": "smolvlm",
        "pad_token_id": 2,
        "scale_factor": spec.scale_factor,
        "text_config": _text_config(spec, vocab_size),
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vision_config": _vision_config(spec),
    }


def image_tokens_per_camera(spec: BackboneSpec) -> int:
    """Image tokens one camera adds to the prefix: patch grid cells / scale_factor**2 (pixel shuffle)."""
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


def _image_processor_config(spec: BackboneSpec) -> dict[str, object]:
    return {
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
    write_json(folder / "config.json", config)
    write_json(folder / "tokenizer_config.json", tokenizer_config(tokenizer, truncation_side))
    write_json(folder / "special_tokens_map.json", special_tokens_map())
    write_json(folder / "preprocessor_config.json", _image_processor_config(spec))
    processor = {"image_seq_len": image_tokens_per_camera(spec), "processor_class": "SmolVLMProcessor"}
    write_json(folder / "processor_config.json", processor)
    write_json(folder / "video_preprocessor_config.json", _VIDEO_PROCESSOR)
    return config
