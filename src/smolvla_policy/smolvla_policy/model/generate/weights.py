"""SmolVLA's state-dict layout (names, shapes, stored dtypes), seeded random weights, a streaming writer."""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

VLM_PREFIX = "model.vlm_with_expert.vlm."
EXPERT_PREFIX = "model.vlm_with_expert.lm_expert."

_SAFETENSORS_DTYPE = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}

Shapes = dict[str, tuple[int, ...]]


def expert_intermediate_size(hidden: int, multiplier: float = 4, multiple_of: int = 256) -> int:
    """The action expert's MLP width: 2/3 of the hidden size, times 4, rounded up to a multiple of 256."""
    width = int(multiplier * int(2 * hidden / 3))
    return multiple_of * math.ceil(width / multiple_of)


def _llama_layer(
    shapes: Shapes,
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


def _vision_shapes(shapes: Shapes, vision: Mapping[str, int], text_hidden: int, scale_factor: int) -> None:
    """The SigLIP-like vision tower and the connector that projects pixel-shuffled patches to text width."""
    vh, vi, patch = vision["hidden_size"], vision["intermediate_size"], vision["patch_size"]
    vis = VLM_PREFIX + "model.vision_model."
    shapes[vis + "embeddings.patch_embedding.weight"] = (vh, 3, patch, patch)
    shapes[vis + "embeddings.patch_embedding.bias"] = (vh,)
    shapes[vis + "embeddings.position_embedding.weight"] = ((vision["image_size"] // patch) ** 2, vh)
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
    connector = VLM_PREFIX + "model.connector.modality_projection.proj.weight"
    shapes[connector] = (text_hidden, vh * scale_factor * scale_factor)


def _projection_shapes(shapes: Shapes, policy: Mapping[str, object], text_hidden: int, eh: int) -> None:
    """State/action projections and the action-time MLP (each a Linear with bias)."""
    for name, (out_dim, in_dim) in {
        "state_proj": (text_hidden, policy["max_state_dim"]),
        "action_in_proj": (eh, policy["max_action_dim"]),
        "action_out_proj": (policy["max_action_dim"], eh),
        "action_time_mlp_in": (eh, 2 * eh),
        "action_time_mlp_out": (eh, eh),
    }.items():
        shapes[f"model.{name}.weight"] = (out_dim, in_dim)
        shapes[f"model.{name}.bias"] = (out_dim,)


def state_dict_shapes(policy: Mapping[str, object], backbone: Mapping[str, object]) -> Shapes:
    """Every tensor name and shape of a SmolVLA ``model.safetensors`` for these configs (policy, SmolVLM)."""
    text = backbone["text_config"]
    th, heads, kv_heads = text["hidden_size"], text["num_attention_heads"], text["num_key_value_heads"]
    head_dim = text.get("head_dim") or th // heads
    vocab = text["vocab_size"]
    vlm_layers = text["num_hidden_layers"]
    if policy["num_vlm_layers"] > 0:
        vlm_layers = min(vlm_layers, policy["num_vlm_layers"])
    expert_layers = policy["num_expert_layers"] if policy["num_expert_layers"] > 0 else vlm_layers
    eh = int(th * policy["expert_width_multiplier"])
    every = policy["self_attn_every_n_layers"]
    cross = "cross" in str(policy["attention_mode"])

    shapes: Shapes = {}
    _vision_shapes(shapes, backbone["vision_config"], th, backbone["scale_factor"])
    txt = VLM_PREFIX + "model.text_model."
    shapes[txt + "embed_tokens.weight"] = (vocab, th)
    for i in range(vlm_layers):
        _llama_layer(
            shapes, f"{txt}layers.{i}.", th, text["intermediate_size"], heads, kv_heads, head_dim, th
        )
    shapes[txt + "norm.weight"] = (th,)
    shapes[VLM_PREFIX + "lm_head.weight"] = (vocab, th)
    ei = expert_intermediate_size(eh)
    for i in range(expert_layers):
        cross_layer = cross and every > 0 and i % every != 0
        kv_in = kv_heads * head_dim if cross_layer else eh
        _llama_layer(shapes, f"{EXPERT_PREFIX}layers.{i}.", eh, ei, heads, kv_heads, head_dim, kv_in=kv_in)
    shapes[EXPERT_PREFIX + "norm.weight"] = (eh,)
    _projection_shapes(shapes, policy, th, eh)
    return shapes


def count_parameters(shapes: Mapping[str, Sequence[int]]) -> int:
    """Total number of scalars in a layout."""
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


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _safetensors_header(
    order: Sequence[str],
    shapes: Mapping[str, Sequence[int]],
    dtype_of: Callable[[str], torch.dtype],
    metadata: Mapping[str, str] | None,
) -> tuple[bytes, int]:
    """The padded JSON header for tensors stored in ``order``, and the size of the data that follows."""
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for key in order:
        dtype = dtype_of(key)
        size = math.prod(shapes[key]) * _element_size(dtype)
        header[key] = {
            "dtype": _SAFETENSORS_DTYPE[dtype],
            "shape": list(shapes[key]),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    return header_bytes + b" " * (-len(header_bytes) % 8), offset


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
    order = sorted(shapes, key=lambda k: (-_element_size(dtype_of(k)), k))
    header_bytes, data_size = _safetensors_header(order, shapes, dtype_of, metadata)
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
    return data_size
