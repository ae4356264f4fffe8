"""``smolvla-make-checkpoint tiny|real-size OUT_DIR [options]``: write a random-weight checkpoint."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from .checkpoint import make_real_size_checkpoint, make_tiny_checkpoint
from .weights import count_parameters, state_dict_shapes

_CONFIG_OPTIONS = (
    "chunk_size",
    "n_action_steps",
    "num_steps",
    "num_vlm_layers",
    "self_attn_every_n_layers",
    "tokenizer_max_length",
    "pad_language_to",
    "add_image_special_tokens",
)
"""Command-line options that are SmolVLA config fields, passed through when given."""


def _shape(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.lower().replace("x", ",").split(",") if p]
    if len(parts) == 2:
        parts = [3, *parts]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected HxW or 3xHxW, got {text!r}")
    return tuple(parts)


def _parser() -> argparse.ArgumentParser:
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
    return parser


def _config_overrides(args: argparse.Namespace) -> dict[str, object]:
    """SmolVLA config fields given on the command line; ``--chunk-size`` alone also sets n_action_steps."""
    overrides = {name: getattr(args, name) for name in _CONFIG_OPTIONS if getattr(args, name) is not None}
    if "chunk_size" in overrides and "n_action_steps" not in overrides:
        overrides["n_action_steps"] = overrides["chunk_size"]
    return overrides


def _builder_kwargs(args: argparse.Namespace) -> dict[str, object]:
    """Builder arguments; options left out keep the builder's own defaults."""
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
    return kwargs


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, write the checkpoint and print a one-line summary."""
    args = _parser().parse_args(argv)
    builder = make_tiny_checkpoint if args.kind == "tiny" else make_real_size_checkpoint
    path = builder(args.out_dir, **_builder_kwargs(args), **_config_overrides(args))
    policy = json.loads((path / "config.json").read_text())
    backbone = json.loads((path / policy["vlm_model_name"] / "config.json").read_text())
    shapes = state_dict_shapes(policy, backbone)
    print(
        f"wrote {args.kind} SmolVLA checkpoint to {path}: {count_parameters(shapes):,} parameters in "
        f"{len(shapes)} tensors, cameras {list(policy['input_features'])[:-1]}, state {args.state_dim}, "
        f"action {args.action_dim}, chunk {policy['chunk_size']}, {policy['num_steps']} steps"
    )
    return 0
