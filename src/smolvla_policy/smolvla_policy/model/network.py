"""SmolVLA's two-tower transformer and flow-matching head, with LeRobot's parameter names.

Building blocks (vision encoder layers, connector, Llama decoder layers) come from transformers so that
the checkpoint's keys load as they are; the attention flow between the towers is our own.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm
from transformers.models.smolvlm.modeling_smolvlm import (
    SmolVLMConnector,
    SmolVLMEncoder,
    SmolVLMVisionEmbeddings,
)

from .config import PolicyConfig

ROPE_BASE = 10_000.0  # LeRobot hard-codes this; the backbone's rope_theta is not used


class Node(nn.Module):
    """A plain container: it only exists so that parameter names match LeRobot's state dict."""


def _can_pack(dtype: torch.dtype, device: torch.device) -> bool:
    return (
        device.type == "cpu"
        and dtype in (torch.float32, torch.bfloat16)
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and (dtype != torch.bfloat16 or onednn_bf16_supported())
    )


def onednn_bf16_supported() -> bool:
    """Whether this CPU has oneDNN's bf16 kernels (AVX-512 bw/vl/dq or AVX-NE-CONVERT); without them bf16
    runs as plain torch ops, many times slower than float32."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


class InferenceLinear(nn.Module):
    """A frozen linear layer, optionally with a fused tanh-GELU; on CPU its weight is pre-packed for oneDNN
    once (MKL's sgemm is markedly slower on AMD CPUs, and packing saves a reorder per call)."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        rows_hint: int,
        gelu: bool = False,
        pack: bool = True,
    ):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.dtype = weight.dtype
        self.gelu = gelu
        self.bias = bias
        self.packed = None
        self.weight = weight
        if pack and _can_pack(weight.dtype, weight.device):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint)
            self.weight = None

    @classmethod
    def fuse(
        cls, linears: list[nn.Module], rows_hint: int, gelu: bool = False, pack: bool = True
    ) -> InferenceLinear:
        """One layer computing the concatenated outputs of `linears` (same input)."""
        weight = torch.cat([m.weight for m in linears]) if len(linears) > 1 else linears[0].weight
        biases = [m.bias for m in linears]
        bias = None if biases[0] is None else torch.cat(biases) if len(biases) > 1 else biases[0]
        return cls(weight.detach(), None if bias is None else bias.detach(), rows_hint, gelu, pack)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            if self.gelu:
                return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "gelu", [], "tanh")
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        out = F.linear(x, self.weight, self.bias)
        return F.gelu(out, approximate="tanh") if self.gelu else out


def unused_by_inference(text_layers: int) -> tuple[str, ...]:
    """State-dict prefixes (relative to ``model.``) that inference never uses, besides ``lm_head``."""
    layer = f"vlm_with_expert.vlm.model.text_model.layers.{text_layers - 1}."
    return (
        f"{layer}self_attn.q_proj.",
        f"{layer}self_attn.o_proj.",
        f"{layer}mlp.",
        f"{layer}post_attention_layernorm.",
        "vlm_with_expert.vlm.model.text_model.norm.",
    )


def release_freed_memory() -> None:
    """Hand heap pages freed by torch back to the OS (glibc keeps small and mid-size frees otherwise)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def wdtype(module: nn.Module) -> torch.dtype:
    return module.dtype if isinstance(module, InferenceLinear) else module.weight.dtype


def expert_intermediate_size(hidden: int, multiplier: int = 4, multiple_of: int = 256) -> int:
    size = int(multiplier * int(2 * hidden / 3))
    return multiple_of * ((size + multiple_of - 1) // multiple_of)


def rope_tables(positions: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (B, L, 1, head_dim/2) in float32 for integer positions (B, L)."""
    half = head_dim // 2
    exponents = (2.0 / head_dim) * torch.arange(half, dtype=torch.float32, device=positions.device)
    angles = positions[..., None].to(torch.float32) / (ROPE_BASE**exponents)
    return torch.cos(angles)[:, :, None, :], torch.sin(angles)[:, :, None, :]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Split-half rotation of x (B, L, H, D), computed in float32 (few ops: they are small and many)."""
    x32 = x.to(torch.float32)
    x1, x2 = x32.chunk(2, dim=-1)
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    o1, o2 = out.chunk(2, dim=-1)
    torch.mul(x1, cos, out=o1).addcmul_(x2, sin, value=-1.0)
    torch.mul(x2, cos, out=o2).addcmul_(x1, sin)
    return out.to(x.dtype)


def mask_to_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean (B, Lq, Lk) -> additive (B, 1, Lq, Lk); fully masked rows stay finite (uniform, like eager)."""
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return bias.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def block_causal_mask(pad: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """i may attend j iff both are valid and cumsum(flags)[j] <= cumsum(flags)[i] (B, L, L)."""
    blocks = torch.cumsum(flags.to(torch.int64), dim=1)
    allowed = blocks[:, None, :] <= blocks[:, :, None]
    return allowed & pad[:, None, :] & pad[:, :, None]


def sinusoidal_time_embedding(
    time: torch.Tensor, dim: int, min_period: float, max_period: float
) -> torch.Tensor:
    """[sin, cos] time features (B, dim), in float64 as LeRobot does on CPU/CUDA."""
    dtype = torch.float64 if time.device.type != "mps" else torch.float32
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=dtype, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (1.0 / period * 2 * math.pi)[None, :] * time[:, None].to(dtype)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """LeRobot's eager attention: float32 scores and softmax, probabilities cast to V's dtype.

    q (B, H, Lq, D), k/v (B, KV, Lk, D) with grouped heads, float32 additive bias (B, 1, Lq, Lk)
    -> (B, Lq, H*D).
    On CPU this is also faster than torch's SDPA kernel at these short lengths; CUDA uses SDPA.
    """
    b, h, lq, d = q.shape
    kv_heads, lk = k.shape[1], k.shape[2]
    if q.device.type == "cuda":
        dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
        out = F.scaled_dot_product_attention(
            q.to(dtype),
            k.to(dtype),
            v.to(dtype),
            attn_mask=bias.to(dtype),
            scale=d**-0.5,
            enable_gqa=h != kv_heads,
        )
        return out.transpose(1, 2).reshape(b, lq, h * d)
    group = h // kv_heads  # query head i reads key/value head i // group
    scores = torch.matmul(q.float().reshape(b, kv_heads, group * lq, d), k.float().transpose(-1, -2))
    scores = scores.view(b, kv_heads, group, lq, lk).mul_(d**-0.5).add_(bias[:, :, None])
    probs = torch.softmax(scores, dim=-1).to(v.dtype).view(b, kv_heads, group * lq, lk)
    out = torch.matmul(probs, v).view(b, h, lq, d)
    return out.transpose(1, 2).reshape(b, lq, h * d)


@dataclass
class DtypeLayout:
    """Parameter dtypes per block (LeRobot's hub layout keeps the projections and cross k/v in float32)."""

    vision: torch.dtype = torch.float32
    text: torch.dtype = torch.float32
    expert: torch.dtype = torch.float32
    expert_cross_kv: torch.dtype = torch.float32
    heads: torch.dtype = torch.float32

    @classmethod
    def named(cls, name: str, cfg: PolicyConfig, text_config) -> DtypeLayout:
        if name == "float32":
            return cls()
        if name in ("bfloat16", "float16"):
            low = getattr(torch, name)
            return cls(vision=low, text=low, expert=low)
        if name == "auto":
            if cfg.load_vlm_weights:  # LeRobot loads the backbone in bfloat16
                return cls(vision=torch.bfloat16, text=torch.bfloat16, expert=torch.bfloat16)
            declared = getattr(text_config, "torch_dtype", None) or getattr(text_config, "dtype", None)
            if isinstance(declared, str):
                declared = getattr(torch, declared)
            text = declared if isinstance(declared, torch.dtype) else torch.float32
            return cls(text=text, expert=text)
        raise ValueError(f"dtype must be 'float32', 'bfloat16', 'float16' or 'auto'; got {name!r}")


@dataclass
class PrefixCache:
    """Everything the denoising loop needs from one prefix pass."""

    self_kv: dict[int, tuple[torch.Tensor, torch.Tensor]]  # layer -> K/V buffers (B, KV, Lp + S, D)
    cross_kv: dict[int, tuple[torch.Tensor, torch.Tensor]]  # layer -> expert-projected K/V (B, KV, Lp, D)
    self_bias: torch.Tensor  # (B, 1, S, Lp + S) float32, additive
    cross_bias: torch.Tensor  # (B, 1, S, Lp) float32, additive
    self_rope: tuple[torch.Tensor, torch.Tensor]
    cross_rope: tuple[torch.Tensor, torch.Tensor]
    prefix_len: int


def _build_vlm(vlm_config, n_text: int) -> Node:
    """The SmolVLM backbone truncated to its first ``n_text`` text layers (LeRobot's module names)."""
    text_cfg, vision_cfg = vlm_config.text_config, vlm_config.vision_config
    vision = Node()
    vision.embeddings = SmolVLMVisionEmbeddings(vision_cfg)
    vision.encoder = SmolVLMEncoder(vision_cfg)
    vision.post_layernorm = nn.LayerNorm(vision_cfg.hidden_size, eps=vision_cfg.layer_norm_eps)
    text = Node()
    text.embed_tokens = nn.Embedding(text_cfg.vocab_size, text_cfg.hidden_size)
    text.layers = nn.ModuleList(LlamaDecoderLayer(text_cfg, i) for i in range(n_text))
    text.norm = LlamaRMSNorm(text_cfg.hidden_size, eps=text_cfg.rms_norm_eps)
    vlm_model = Node()
    vlm_model.vision_model = vision
    vlm_model.connector = SmolVLMConnector(vlm_config)
    vlm_model.text_model = text
    vlm = Node()
    vlm.model = vlm_model
    return vlm


def _make_cross_attention(expert: Node, expert_cfg, every: int, kv_width: int) -> set[int]:
    """Give the expert's cross-attention layers (all but every ``every``-th) keys and values of the VLM's
    width; returns their indices."""
    cross = set()
    bias = bool(getattr(expert_cfg, "attention_bias", False))
    for j, layer in enumerate(expert.layers):
        if every > 0 and j % every == 0:
            continue
        layer.self_attn.k_proj = nn.Linear(kv_width, kv_width, bias=bias)
        layer.self_attn.v_proj = nn.Linear(kv_width, kv_width, bias=bias)
        cross.add(j)
    return cross


def _layer_plan(
    n_text: int, n_expert: int, every: int, cross_mode: bool, expert_cross_layers: set[int]
) -> list[tuple[int, int | None, bool]]:
    """Pair VLM layer i with an expert layer (or none) and decide self- or cross-attention from i."""
    multiple = n_text // n_expert
    plan: list[tuple[int, int | None, bool]] = []
    for i in range(n_text):
        j = None if (i % multiple) else i // multiple
        is_self = (not cross_mode) or (every > 0 and i % every == 0)
        if j is not None and (j in expert_cross_layers) == is_self:
            kind = "self" if is_self else "cross"
            raise ValueError(
                f"layer pairing is inconsistent: VLM layer {i} is a {kind}-attention layer but expert "
                f"layer {j} was built the other way (num_expert_layers={n_expert}, "
                f"self_attn_every_n_layers={every}); LeRobot cannot run this configuration either"
            )
        plan.append((i, j, is_self))
    return plan


class SmolVLANet(nn.Module):
    """Truncated SmolVLM + action expert + flow-matching projections (keys relative to LeRobot's `model.`)."""

    def __init__(self, cfg: PolicyConfig, vlm_config):
        super().__init__()
        self.cfg = cfg
        text_cfg = vlm_config.text_config
        n_text = cfg.num_vlm_layers if cfg.num_vlm_layers > 0 else text_cfg.num_hidden_layers
        if n_text > text_cfg.num_hidden_layers:
            raise ValueError(
                f"num_vlm_layers={n_text} but the backbone has {text_cfg.num_hidden_layers} layers"
            )
        self.head_dim = (
            getattr(text_cfg, "head_dim", None) or text_cfg.hidden_size // text_cfg.num_attention_heads
        )
        self.num_heads = text_cfg.num_attention_heads
        self.num_kv_heads = text_cfg.num_key_value_heads

        vlm = _build_vlm(vlm_config, n_text)
        expert_cfg = copy.deepcopy(text_cfg)
        expert_cfg.head_dim = self.head_dim
        expert_cfg.hidden_size = int(text_cfg.hidden_size * cfg.expert_width_multiplier)
        expert_cfg.intermediate_size = expert_intermediate_size(expert_cfg.hidden_size)
        n_expert = cfg.num_expert_layers if cfg.num_expert_layers > 0 else n_text
        if n_text % n_expert:
            raise ValueError(f"num_vlm_layers {n_text} is not a multiple of num_expert_layers {n_expert}")
        expert_cfg.num_hidden_layers = n_expert
        expert = Node()
        expert.layers = nn.ModuleList(LlamaDecoderLayer(expert_cfg, i) for i in range(n_expert))
        expert.norm = LlamaRMSNorm(expert_cfg.hidden_size, eps=expert_cfg.rms_norm_eps)
        self.cross_mode = "cross" in cfg.attention_mode
        every = cfg.self_attn_every_n_layers
        self.expert_cross_layers: set[int] = set()
        if self.cross_mode:
            self.expert_cross_layers = _make_cross_attention(
                expert, expert_cfg, every, self.num_kv_heads * self.head_dim
            )

        self.vlm_with_expert = Node()
        self.vlm_with_expert.vlm = vlm
        self.vlm_with_expert.lm_expert = expert
        hidden, expert_hidden = text_cfg.hidden_size, expert_cfg.hidden_size
        self.expert_hidden = expert_hidden
        self.state_proj = nn.Linear(cfg.max_state_dim, hidden)
        self.action_in_proj = nn.Linear(cfg.max_action_dim, expert_hidden)
        self.action_out_proj = nn.Linear(expert_hidden, cfg.max_action_dim)
        self.action_time_mlp_in = nn.Linear(2 * expert_hidden, expert_hidden)
        self.action_time_mlp_out = nn.Linear(expert_hidden, expert_hidden)

        self.plan = _layer_plan(n_text, n_expert, every, self.cross_mode, self.expert_cross_layers)
        self._vision_positions: dict = {}
        self.pack_linears = True  # pre-pack weights for oneDNN on CPU (pointless for tiny models)
        self.image_special_ids: tuple[list[int], list[int]] | None = None

    # ----------------------------------------------------------------------------------------- layout
    @property
    def text(self) -> Node:
        return self.vlm_with_expert.vlm.model.text_model

    @property
    def vision(self) -> Node:
        return self.vlm_with_expert.vlm.model.vision_model

    @property
    def expert(self) -> Node:
        return self.vlm_with_expert.lm_expert

    def param_dtype(self, name: str, layout: DtypeLayout) -> torch.dtype:
        if name.startswith(
            ("vlm_with_expert.vlm.model.vision_model.", "vlm_with_expert.vlm.model.connector.")
        ):
            return layout.vision
        if name.startswith("vlm_with_expert.vlm."):
            return layout.text
        if name.startswith("vlm_with_expert.lm_expert."):
            parts = name.split(".")
            if (
                parts[2] == "layers"
                and int(parts[3]) in self.expert_cross_layers
                and parts[5] in ("k_proj", "v_proj")
            ):
                return layout.expert_cross_kv
            return layout.expert
        return layout.heads

    @staticmethod
    def load_group(name: str) -> str:
        """The unit in which weights are loaded and fused: one transformer layer, or the rest."""
        for prefix in (
            "vlm_with_expert.vlm.model.vision_model.encoder.layers.",
            "vlm_with_expert.vlm.model.text_model.layers.",
            "vlm_with_expert.lm_expert.layers.",
        ):
            if name.startswith(prefix):
                return prefix + name[len(prefix) :].split(".")[0]
        return "rest"

    def drop_unused(self) -> tuple[str, ...]:
        """Remove what inference never runs; returns the state-dict prefixes of the removed tensors.

        The last VLM layer only gives the expert its keys and values: its query and output projections, its
        MLP and the text model's final norm are never used, so they are neither loaded nor kept.
        """
        last = self.text.layers[-1]
        if not hasattr(last, "mlp"):
            return ()
        del last.self_attn.q_proj, last.self_attn.o_proj, last.mlp, last.post_attention_layernorm
        del self.text.norm
        return unused_by_inference(len(self.text.layers))

    def prepare_group(self, group: str) -> None:
        """Fuse q/k/v (and gate/up) projections of a freshly loaded group into single frozen GEMMs.

        Loading calls this group by group, so memory never holds two copies of more than one layer.
        """
        patches = self.vision.embeddings.num_patches
        if group == "rest":
            connector = self.vlm_with_expert.vlm.model.connector.modality_projection
            connector.proj = self._fuse([connector.proj], patches)
            for name in ("state_proj", "action_in_proj", "action_out_proj", "action_time_mlp_in"):
                setattr(self, name, self._fuse([getattr(self, name)], self.cfg.chunk_size))
            self.action_time_mlp_out = self._fuse([self.action_time_mlp_out], self.cfg.chunk_size)
            return
        index = int(group.rsplit(".", 1)[1])
        if group.startswith("vlm_with_expert.vlm.model.vision_model."):
            layer = self.vision.encoder.layers[index]
            att, mlp = layer.self_attn, layer.mlp
            self._fuse_into(att, "qkv", ["q_proj", "k_proj", "v_proj"], patches)
            self._fuse_into(att, "out", ["out_proj"], patches)
            self._fuse_into(mlp, "fc1_gelu", ["fc1"], patches, gelu=True)
            self._fuse_into(mlp, "fc2_", ["fc2"], patches)
        elif group.startswith("vlm_with_expert.vlm.model.text_model."):
            layer = self.text.layers[index]
            if hasattr(layer, "mlp"):
                self._fuse_decoder_layer(layer, 256, cross=False)
            else:  # the last layer after drop_unused(): keys and values only
                self._fuse_into(layer.self_attn, "kv", ["k_proj", "v_proj"], 256)
        else:
            cross = index in self.expert_cross_layers
            self._fuse_decoder_layer(self.expert.layers[index], self.cfg.chunk_size, cross=cross)

    def _fuse(self, linears: list[nn.Module], rows_hint: int, gelu: bool = False) -> InferenceLinear:
        return InferenceLinear.fuse(linears, rows_hint, gelu, pack=self.pack_linears)

    def _fuse_into(
        self, parent: nn.Module, name: str, parts: list[str], rows_hint: int, gelu: bool = False
    ) -> None:
        """parent.<name> = one GEMM for the linears parent.<parts> (same input); the originals go at once,
        so loading never holds more than one extra copy of one weight group."""
        setattr(parent, name, self._fuse([getattr(parent, part) for part in parts], rows_hint, gelu))
        for part in parts:
            delattr(parent, part)
        release_freed_memory()

    def _fuse_decoder_layer(self, layer: nn.Module, rows: int, cross: bool) -> None:
        att, mlp = layer.self_attn, layer.mlp
        if cross:  # queries from the suffix; keys/values from the cached VLM keys/values
            self._fuse_into(att, "q", ["q_proj"], rows)
            self._fuse_into(att, "k_in", ["k_proj"], rows)
            self._fuse_into(att, "v_in", ["v_proj"], rows)
        else:
            self._fuse_into(att, "qkv", ["q_proj", "k_proj", "v_proj"], rows)
        self._fuse_into(att, "o", ["o_proj"], rows)
        self._fuse_into(mlp, "gate_up", ["gate_proj", "up_proj"], rows)
        self._fuse_into(mlp, "down", ["down_proj"], rows)

    @staticmethod
    def _mlp(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        gate, up = layer.mlp.gate_up(x).chunk(2, dim=-1)
        return layer.mlp.down(F.silu(gate) * up)

    def _qkv(
        self, att: nn.Module, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotated q (B, L, H, D) and k (B, L, KV, D), and v (B, L, KV, D) from one fused projection."""
        batch, length, _ = x.shape
        dim = self.head_dim
        qk_width = (self.num_heads + self.num_kv_heads) * dim
        qk, v = att.qkv(x).split([qk_width, self.num_kv_heads * dim], -1)
        qk = apply_rope(qk.view(batch, length, -1, dim), *rope)  # q and k heads in one rotation
        q, k = qk.split([self.num_heads, self.num_kv_heads], dim=2)
        return q, k, v.view(batch, length, -1, dim)

    # ----------------------------------------------------------------------------------------- vision
    def _positions(self, rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Patch position ids exactly as the SmolVLM embeddings compute them for a full patch grid."""
        key = (rows, cols, dtype, device)
        if key not in self._vision_positions:
            per_side = self.vision.embeddings.num_patches_per_side
            boundaries = torch.arange(1 / per_side, 1.0, 1 / per_side, device=device)
            h = torch.arange(rows, device=device, dtype=dtype) / rows * (1 - 1e-6)
            w = torch.arange(cols, device=device, dtype=dtype) / cols * (1 - 1e-6)
            bh = torch.bucketize(h, boundaries, right=True)
            bw = torch.bucketize(w, boundaries, right=True)
            self._vision_positions[key] = (bh[:, None] * per_side + bw).flatten()
        return self._vision_positions[key]

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> connector output (N, T, hidden), before the sqrt(hidden) scaling."""
        vision = self.vision
        emb = vision.embeddings
        dtype = emb.patch_embedding.weight.dtype
        x = emb.patch_embedding(pixels.to(dtype))
        n, _, rows, cols = x.shape
        x = x.flatten(2).transpose(1, 2).contiguous()  # a transposed layout would follow x to every op
        x = x + emb.position_embedding(self._positions(rows, cols, dtype, x.device))[None]
        length = x.shape[1]
        for layer in vision.encoder.layers:
            att = layer.self_attn
            qkv = att.qkv(layer.layer_norm1(x)).view(n, length, 3, att.num_heads, att.head_dim)
            # (3, N, heads, L, D) contiguous: the CPU flash kernel is faster on it than on strided views
            q, k, v = qkv.permute(2, 0, 3, 1, 4).contiguous().unbind(0)
            o = F.scaled_dot_product_attention(q, k, v, scale=att.scale)
            x = x + att.out(o.transpose(1, 2).reshape(n, length, att.embed_dim))
            x = x + layer.mlp.fc2_(layer.mlp.fc1_gelu(layer.layer_norm2(x)))
        x = vision.post_layernorm(x)
        return self.vlm_with_expert.vlm.model.connector(x)

    # ----------------------------------------------------------------------------------------- prefix
    def embed_prefix(
        self,
        image_embs: list[torch.Tensor],
        image_masks: list[torch.Tensor],
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
        state: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prefix embeddings, pad mask and attention flags; image_embs are connector outputs per camera."""
        embed = self.text.embed_tokens
        batch = state.shape[0]
        device = state.device
        embs, pads, flags = [], [], []

        def special(ids: list[int]) -> None:
            e = embed(torch.tensor(ids, device=device))[None].expand(batch, -1, -1)
            embs.append(e)
            pads.append(torch.ones(batch, len(ids), dtype=torch.bool, device=device))
            flags.extend([0] * len(ids))

        for img, mask in zip(image_embs, image_masks, strict=True):
            if self.cfg.add_image_special_tokens:
                special(self.image_special_ids[0])
            embs.append(img * torch.tensor(img.shape[-1] ** 0.5, dtype=img.dtype, device=device))
            pads.append(mask[:, None].expand(batch, img.shape[1]))
            flags.extend([0] * img.shape[1])
            if self.cfg.add_image_special_tokens:
                special(self.image_special_ids[1])
        lang = embed(tokens)
        embs.append(lang * math.sqrt(lang.shape[-1]))
        pads.append(token_mask)
        flags.extend([0] * tokens.shape[1])
        embs.append(self.state_proj(state.to(wdtype(self.state_proj)))[:, None])
        pads.append(torch.ones(batch, 1, dtype=torch.bool, device=device))
        flags.append(1)

        dtype = embs[0].dtype
        for e in embs[1:]:
            dtype = torch.promote_types(dtype, e.dtype)
        prefix = torch.cat([e.to(dtype) for e in embs], dim=1)
        pad = torch.cat(pads, dim=1)
        att = torch.tensor(flags, dtype=torch.bool, device=device)[None].expand(batch, -1)
        missing = self.cfg.prefix_length - prefix.shape[1]
        if missing > 0:
            prefix = F.pad(prefix, (0, 0, 0, missing))
            pad = F.pad(pad, (0, missing), value=False)
            att = F.pad(att, (0, missing), value=False)
        return prefix, pad, att

    def fill_cache(self, prefix: torch.Tensor, pad: torch.Tensor, flags: torch.Tensor) -> PrefixCache:
        """Run the VLM once over the prefix; keep post-RoPE keys and values, prepare the expert's inputs."""
        batch, length, _ = prefix.shape
        kv_heads, dim = self.num_kv_heads, self.head_dim
        chunk = self.cfg.chunk_size
        positions = torch.cumsum(pad.to(torch.int64), dim=1) - 1
        cos, sin = rope_tables(positions, dim)
        allowed = block_causal_mask(pad, flags)
        bias = mask_to_bias(allowed, torch.float32)
        keys, values = [], []
        h = prefix
        last = len(self.text.layers) - 1
        for i, layer in enumerate(self.text.layers):
            att = layer.self_attn
            if i == last:  # only the keys and values of the last layer are used
                x = layer.input_layernorm(h).to(wdtype(att.kv))
                k, v = att.kv(x).view(batch, length, 2, kv_heads, dim).unbind(2)
                keys.append(apply_rope(k, cos, sin))
                values.append(v)
                break
            x = layer.input_layernorm(h).to(wdtype(att.qkv))
            q, k, v = self._qkv(att, x, (cos, sin))
            keys.append(k)
            values.append(v)
            o = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), bias)
            out = att.o(o.to(wdtype(att.o)))
            out.add_(h)
            mlp = self._mlp(layer, layer.post_attention_layernorm(out))
            mlp.add_(out)
            h = mlp

        # Expert side, computed once per chunk.
        suffix_pos = pad.sum(dim=1, keepdim=True) + torch.arange(chunk, device=pad.device)[None]
        self_rope = rope_tables(suffix_pos, dim)
        cross_rope = rope_tables(suffix_pos - suffix_pos.min(dim=1, keepdim=True).values, dim)
        causal = torch.ones(chunk, chunk, dtype=torch.bool, device=pad.device).tril()
        self_allowed = torch.cat(
            [pad[:, None, :].expand(batch, chunk, length), causal[None].expand(batch, -1, -1)], dim=2
        )
        self_kv, cross_kv = {}, {}
        for i, j, is_self in self.plan:
            if j is None:
                continue
            att = self.expert.layers[j].self_attn
            if is_self:
                buf_k = torch.empty(
                    batch, kv_heads, length + chunk, dim, dtype=keys[i].dtype, device=prefix.device
                )
                buf_v = torch.empty(
                    batch, kv_heads, length + chunk, dim, dtype=values[i].dtype, device=prefix.device
                )
                buf_k[:, :, :length] = keys[i].transpose(1, 2)
                buf_v[:, :, :length] = values[i].transpose(1, 2)
                self_kv[i] = (buf_k, buf_v)
            else:
                kx = keys[i].reshape(batch, length, kv_heads * dim).to(wdtype(att.k_in))
                vx = values[i].reshape(batch, length, kv_heads * dim).to(wdtype(att.v_in))
                cross_kv[i] = (
                    att.k_in(kx).view(batch, length, -1, dim).transpose(1, 2).contiguous(),
                    att.v_in(vx).view(batch, length, -1, dim).transpose(1, 2).contiguous(),
                )
        return PrefixCache(
            self_kv=self_kv,
            cross_kv=cross_kv,
            self_bias=mask_to_bias(self_allowed, torch.float32),
            cross_bias=mask_to_bias(pad[:, None, :].expand(batch, chunk, length), torch.float32),
            self_rope=self_rope,
            cross_rope=cross_rope,
            prefix_len=length,
        )

    # ----------------------------------------------------------------------------------------- suffix
    def time_embeddings(self, times: list[float], batch: int, device: torch.device) -> list[torch.Tensor]:
        """Per-step time features (B, expert_hidden), computed once per chunk."""
        out = []
        for t in times:
            t32 = torch.full((batch,), t, dtype=torch.float32, device=device)
            out.append(
                sinusoidal_time_embedding(t32, self.expert_hidden, self.cfg.min_period, self.cfg.max_period)
            )
        return out

    def velocity(self, x_t: torch.Tensor, time_emb: torch.Tensor, cache: PrefixCache) -> torch.Tensor:
        """One flow-matching velocity v(x_t, t) (B, S, max_action_dim) in float32."""
        batch, chunk, _ = x_t.shape
        heads, dim = self.num_heads, self.head_dim
        a = self.action_in_proj(x_t.to(wdtype(self.action_in_proj)))
        t = time_emb.to(a.dtype)[:, None, :].expand_as(a)
        h = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(torch.cat([a, t], dim=2))))
        length = cache.prefix_len
        for i, j, is_self in self.plan:
            if j is None:
                continue
            layer = self.expert.layers[j]
            att = layer.self_attn
            if is_self:
                x = layer.input_layernorm(h).to(wdtype(att.qkv))
                q, k, v = self._qkv(att, x, cache.self_rope)
                buf_k, buf_v = cache.self_kv[i]
                buf_k[:, :, length:] = k.transpose(1, 2)
                buf_v[:, :, length:] = v.transpose(1, 2)
                o = attention(q.transpose(1, 2), buf_k, buf_v, cache.self_bias)
            else:
                x = layer.input_layernorm(h).to(wdtype(att.q))
                q = apply_rope(att.q(x).view(batch, chunk, heads, dim), *cache.cross_rope)
                o = attention(q.transpose(1, 2), *cache.cross_kv[i], cache.cross_bias)
            out = att.o(o.to(wdtype(att.o)))
            out.add_(h)
            mlp = self._mlp(layer, layer.post_attention_layernorm(out))
            mlp.add_(out)
            h = mlp
        h = self.expert.norm(h)
        return self.action_out_proj(h.to(torch.float32).to(wdtype(self.action_out_proj))).to(torch.float32)
