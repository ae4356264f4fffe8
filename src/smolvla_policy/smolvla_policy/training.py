"""Train a small SmolVLA from scratch with LeRobot's own trainer (``lerobot-train`` in ``.venv-lerobot``).

``python scripts/train_policy.py --dataset recordings/closed-loop/dataset --output-dir outputs/closed-loop``

No pretrained weights are reachable offline, so the VLM is a small SmolVLM built from a config this module
writes (:data:`TRAIN_BACKBONE`: 64x64 images, 16 image tokens per camera or 64 with ``--token-grid 8``, a
4-layer 64-wide Llama) and every part is trained (vision encoder included). Each saved ``pretrained_model``
folder gets a copy of that config and tokenizer (``vlm/``, what ``vlm_model_name`` names), so a checkpoint
is self-contained: the policy node and LeRobot load it as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from smolvla_policy.model.generate.backbone import (
    TINY_BACKBONE,
    BackboneSpec,
    write_backbone_folder,
)

TRAIN_BACKBONE = replace(TINY_BACKBONE, scale_factor=2, text_layers=4)
"""The tiny backbone with a 4x4 token grid per camera (where the cube is matters) and 4 text layers."""

TOKEN_GRIDS = {2: 4, 4: 2, 8: 1}
"""Token grid side per camera -> pixel-shuffle scale factor of the 8x8 patch grid."""


def train_backbone(token_grid: int = 4) -> BackboneSpec:
    """:data:`TRAIN_BACKBONE` with ``token_grid`` x ``token_grid`` image tokens per camera."""
    return replace(TRAIN_BACKBONE, scale_factor=TOKEN_GRIDS[token_grid])


VLM_FOLDER = "vlm"


def lerobot_train_arguments(args: argparse.Namespace) -> list[str]:
    """``lerobot-train`` options: a from-scratch SmolVLA on ``TRAIN_BACKBONE``, seeded, CPU unless told."""
    size = TRAIN_BACKBONE.image_size
    options = {
        "dataset.repo_id": "local/so101_pick_cube",
        "dataset.root": str(Path(args.dataset).resolve()),
        # no dataset.video_backend: LeRobot takes torchcodec when it imports (make bench-model-setup installs
        # it where FFmpeg's libraries are), pyav otherwise
        **({"policy.path": str(args.init_from.resolve())} if args.init_from else {"policy.type": "smolvla"}),
        "policy.device": args.device,
        "policy.push_to_hub": "false",
        "policy.vlm_model_name": VLM_FOLDER,  # relative: resolved from the run folder, then the checkpoint
        "policy.load_vlm_weights": "false",
        "policy.freeze_vision_encoder": "false",
        "policy.train_expert_only": "false",
        "policy.num_vlm_layers": str(TRAIN_BACKBONE.text_layers),
        "policy.resize_imgs_with_padding": f"[{size},{size}]",
        "policy.chunk_size": str(args.chunk_size),
        "policy.n_action_steps": str(args.chunk_size),
        "policy.optimizer_lr": str(args.lr),
        "policy.scheduler_warmup_steps": str(min(500, args.steps // 10)),
        "policy.scheduler_decay_steps": str(args.steps),
        "batch_size": str(args.batch_size),
        "steps": str(args.steps),
        "save_freq": str(args.save_freq),
        "log_freq": "50",
        "num_workers": str(args.num_workers),
        "seed": str(args.seed),
        "output_dir": "train",
        "wandb.enable": "false",
    }
    return [f"--{key}={value}" for key, value in options.items()]


def package_checkpoints(run: Path) -> list[Path]:
    """Copy the VLM folder into every saved ``pretrained_model`` of ``run``; return those folders (by step;
    LeRobot's ``last`` link to the newest is left out)."""
    models = sorted(run.glob("train/checkpoints/[0-9]*/pretrained_model"))
    for model in models:
        if not (model / VLM_FOLDER).is_dir():
            shutil.copytree(run / VLM_FOLDER, model / VLM_FOLDER)
    return models


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="recordings/closed-loop/dataset", help="LeRobot dataset folder")
    parser.add_argument("--output-dir", default="outputs/closed-loop", help="run folder (vlm/, train/)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=30, help="actions per chunk (30 = 1 s at 30 fps)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--save-freq", type=int, default=500, help="steps between saved checkpoints")
    parser.add_argument("--num-workers", type=int, default=2, help="data loader processes (video decoding)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the trainer (1: this tiny model gains nothing from more, and more threads "
        "fight the data loaders for the cores: on 2 cores, 2 threads took 3x longer per update)",
    )
    parser.add_argument(
        "--token-grid",
        type=int,
        choices=sorted(TOKEN_GRIDS),
        default=4,
        help="image tokens per camera: a GRID x GRID grid (8: finer, 4x the image tokens of the default 4; "
        "a new run only: --init-from and --resume keep their checkpoint's)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lerobot-venv", default=os.environ.get("LEROBOT_VENV", ".venv-lerobot"))
    parser.add_argument("--resume", action="store_true", help="continue the run's last checkpoint")
    parser.add_argument(
        "--init-from",
        type=Path,
        help="start from this checkpoint's weights (a pretrained_model folder, e.g. "
        "checkpoints/sim-pick-cube) with a new optimizer and schedule, instead of from scratch",
    )
    args = parser.parse_args(argv)
    if not (Path(args.dataset) / "meta" / "info.json").is_file():
        parser.error(f"--dataset {args.dataset}: no LeRobot dataset there (make collect writes one)")
    trainer = Path(args.lerobot_venv) / "bin" / "lerobot-train"
    if not trainer.is_file():
        parser.error(f"--lerobot-venv {args.lerobot_venv}: no lerobot-train (make bench-model-setup)")
    args.trainer = trainer.resolve()
    if args.init_from and not (args.init_from / "model.safetensors").is_file():
        parser.error(f"--init-from {args.init_from}: no model.safetensors there (a pretrained_model folder)")
    if args.init_from and args.resume:
        parser.error("--init-from starts a new run; --resume continues one: pass one of them")
    if min(args.steps, args.batch_size, args.chunk_size, args.save_freq, args.threads) < 1:
        parser.error("--steps, --batch-size, --chunk-size, --save-freq and --threads must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    run = Path(args.output_dir)
    run.mkdir(parents=True, exist_ok=True)
    if args.init_from:  # the backbone its weights were trained with
        shutil.copytree(args.init_from / VLM_FOLDER, run / VLM_FOLDER, dirs_exist_ok=True)
    elif not (args.resume and (run / VLM_FOLDER).is_dir()):
        write_backbone_folder(run / VLM_FOLDER, train_backbone(args.token_grid))
    if args.resume:
        config = run / "train/checkpoints/last/pretrained_model/train_config.json"
        command = [str(args.trainer), f"--config_path={config.resolve()}", "--resume=true"]
    else:
        if (run / "train").exists():
            print(f"train: {run / 'train'} exists: pass --resume, or another --output-dir", file=sys.stderr)
            return 2
        command = [str(args.trainer), *lerobot_train_arguments(args)]
    tokens = json.loads((run / VLM_FOLDER / "processor_config.json").read_text())["image_seq_len"]
    print(
        f"train: {TRAIN_BACKBONE.image_size}px images, {tokens} tokens per camera; {' '.join(command)}",
        flush=True,
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["OMP_NUM_THREADS"] = str(args.threads)
    try:
        code = subprocess.call(command, cwd=run, env=env)
    finally:  # also after Ctrl-C: every checkpoint saved so far becomes loadable on its own
        for model in package_checkpoints(run):
            print(f"train: checkpoint {model}")
    return code


if __name__ == "__main__":
    sys.exit(main())
