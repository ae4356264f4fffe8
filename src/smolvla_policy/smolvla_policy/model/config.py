"""SmolVLA policy configuration as saved by LeRobot 0.4.x (`config.json` with `"type": "smolvla"`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from smolvla_policy.features import ACTION_KEY, EMPTY_CAMERA_PREFIX, STATE_KEY

__all__ = ["ACTION_KEY", "EMPTY_CAMERA_PREFIX", "STATE_KEY"]


@dataclass(frozen=True)
class RTCSettings:
    """Real-Time Chunking defaults (LeRobot's `RTCConfig`)."""

    enabled: bool = False
    prefix_attention_schedule: str = "LINEAR"
    max_guidance_weight: float = 10.0
    execution_horizon: int = 10


@dataclass(frozen=True)
class PolicyConfig:
    """The fields of a LeRobot SmolVLA config that change inference numerics."""

    image_features: dict[str, tuple[int, ...]]
    state_dim: int
    action_dim: int
    chunk_size: int = 50
    n_action_steps: int = 50
    max_state_dim: int = 32
    max_action_dim: int = 32
    resize_imgs_with_padding: tuple[int, int] | None = (512, 512)
    empty_cameras: int = 0
    adapt_to_pi_aloha: bool = False
    tokenizer_max_length: int = 48
    num_steps: int = 10
    use_cache: bool = True
    vlm_model_name: str = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
    load_vlm_weights: bool = False
    add_image_special_tokens: bool = False
    attention_mode: str = "cross_attn"
    prefix_length: int = -1
    pad_language_to: str = "longest"
    num_expert_layers: int = -1
    num_vlm_layers: int = 16
    self_attn_every_n_layers: int = 2
    expert_width_multiplier: float = 0.75
    min_period: float = 4e-3
    max_period: float = 4.0
    normalization_mapping: dict[str, str] = field(
        default_factory=lambda: {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    )
    rtc: RTCSettings = RTCSettings()
    fps: float | None = None

    @property
    def camera_keys(self) -> list[str]:
        """Image keys the caller must provide (the placeholder empty cameras excluded)."""
        return [k for k in self.image_features if not k.startswith(EMPTY_CAMERA_PREFIX)]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PolicyConfig:
        """Parse LeRobot's `config.json`; raises ValueError with the offending field on bad input."""
        if raw.get("type", "smolvla") != "smolvla":
            raise ValueError(
                f"config.json has type {raw.get('type')!r}; only 'smolvla' checkpoints are supported"
            )
        inputs = raw.get("input_features") or {}
        outputs = raw.get("output_features") or {}
        images = {k: tuple(v["shape"]) for k, v in inputs.items() if v.get("type") == "VISUAL"}
        empty = int(raw.get("empty_cameras", 0))
        for i in range(empty):  # LeRobot's validate_features adds these placeholders
            images.setdefault(f"{EMPTY_CAMERA_PREFIX}{i}", (3, 480, 640))
        if STATE_KEY not in inputs:
            raise ValueError(f"config.json input_features lacks {STATE_KEY!r} (has {sorted(inputs)})")
        if ACTION_KEY not in outputs:
            raise ValueError(f"config.json output_features lacks {ACTION_KEY!r} (has {sorted(outputs)})")
        if not images:
            raise ValueError("config.json input_features has no VISUAL feature")
        if raw.get("use_delta_joint_actions_aloha"):
            raise ValueError("use_delta_joint_actions_aloha=True is not supported (LeRobot rejects it too)")
        rtc_raw = raw.get("rtc_config") or {}
        rtc = RTCSettings(
            enabled=bool(rtc_raw.get("enabled", False)),
            prefix_attention_schedule=str(rtc_raw.get("prefix_attention_schedule", "LINEAR")).upper(),
            max_guidance_weight=float(rtc_raw.get("max_guidance_weight", 10.0)),
            execution_horizon=int(rtc_raw.get("execution_horizon", 10)),
        )
        resize = raw.get("resize_imgs_with_padding", (512, 512))
        defaults = cls.__dataclass_fields__
        plain = {
            name: type(defaults[name].default)(raw[name])
            for name in (
                "chunk_size",
                "n_action_steps",
                "max_state_dim",
                "max_action_dim",
                "tokenizer_max_length",
                "num_steps",
                "use_cache",
                "vlm_model_name",
                "load_vlm_weights",
                "add_image_special_tokens",
                "attention_mode",
                "prefix_length",
                "pad_language_to",
                "num_expert_layers",
                "num_vlm_layers",
                "self_attn_every_n_layers",
                "expert_width_multiplier",
                "min_period",
                "max_period",
                "adapt_to_pi_aloha",
            )
            if raw.get(name) is not None
        }
        cfg = cls(
            image_features=images,
            state_dim=int(inputs[STATE_KEY]["shape"][-1]),
            action_dim=int(outputs[ACTION_KEY]["shape"][-1]),
            resize_imgs_with_padding=None if resize is None else (int(resize[0]), int(resize[1])),
            empty_cameras=empty,
            normalization_mapping=dict(
                raw.get("normalization_mapping")
                or {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
            ),
            rtc=rtc,
            fps=float(raw["fps"]) if raw.get("fps") else None,
            **plain,
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.state_dim > self.max_state_dim:
            raise ValueError(f"state dim {self.state_dim} exceeds max_state_dim {self.max_state_dim}")
        if self.action_dim > self.max_action_dim:
            raise ValueError(f"action dim {self.action_dim} exceeds max_action_dim {self.max_action_dim}")
        if self.n_action_steps > self.chunk_size:
            raise ValueError(f"n_action_steps {self.n_action_steps} exceeds chunk_size {self.chunk_size}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if not self.use_cache:
            raise ValueError("use_cache=False cannot run inference (LeRobot needs the prefix KV cache too)")
        if self.adapt_to_pi_aloha:
            raise ValueError("adapt_to_pi_aloha=True (Aloha joint transforms) is not supported")
