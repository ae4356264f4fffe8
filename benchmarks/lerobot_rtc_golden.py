"""Write the Real-Time Chunking golden file: LeRobot 0.4.4's own RTC-guided chunks on a tiny checkpoint.

Runs inside ``.venv-lerobot`` (``make bench-model-setup``), never in tests. The checkpoint is a tiny random
one from our generator (``smolvla_policy.model.generate.make_tiny_checkpoint``, deterministic for its
seed), so only its recipe and a digest of its files are stored; the test rebuilds it and checks the digest.

For every case, LeRobot's deployment path runs twice on the same observation: once without RTC, with another
noise, to make a previous chunk (raw model output, still normalised, as LeRobot's RTC action queue keeps it),
then with RTC on (``rtc_config`` enabled with the case's schedule and max guidance weight) and
``predict_action_chunk(batch, noise=..., prev_chunk_left_over=..., inference_delay=...,
execution_horizon=...)``.
Stored per case: the inputs, the noise, the previous chunk left over (normalised, and in action units through
LeRobot's post-processor), the guided raw chunk and actions, and the unguided actions of the same noise.

Usage::

    .venv-lerobot/bin/python benchmarks/lerobot_rtc_golden.py [--out src/smolvla_policy/test/data/rtc_golden]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "smolvla_policy" / "test" / "data" / "rtc_golden"

# Recipe of the checkpoint (keyword arguments of make_tiny_checkpoint). Its own rtc_config is what a case
# without overrides uses.
CHECKPOINT = {
    "seed": 1234,
    "cameras": ["top", "wrist"],
    "image_shape": [3, 48, 64],
    "chunk_size": 16,
    "n_action_steps": 16,
    "num_steps": 5,
    "stats": {
        key: {
            "mean": [0.0, -20.0, 30.0, 10.0, 0.0, 30.0],
            "std": [25.0, 20.0, 20.0, 15.0, 30.0, 15.0],
        }
        for key in ("observation.state", "action")
    },
    "rtc_config": {
        "enabled": True,
        "prefix_attention_schedule": "LINEAR",
        "max_guidance_weight": 10.0,
        "execution_horizon": 8,
        "debug": False,
        "debug_maxlen": 100,
    },
}
TASKS = ["pick up the cube", "put the red block in the box", "open the drawer\n"]

# name, batch, schedule (None: the checkpoint's), max guidance weight (None: the checkpoint's), inference
# delay, execution horizon (None: the config's), previous chunk (start and length in the previous raw chunk)
CASES = [
    ("linear_d3_config_horizon", 1, None, None, 3, None, (2, 12)),
    ("exp_d2_h10_full_prev", 1, "EXP", None, 2, 10, (0, 16)),
    ("zeros_d5_h4_delay_clipped", 1, "ZEROS", None, 5, 4, (4, 9)),
    ("ones_d0_short_prev_w5", 1, "ONES", 5.0, 0, None, (7, 5)),
    ("linear_d4_h20_beyond_chunk_w2_5", 1, "LINEAR", 2.5, 4, 20, (0, 16)),
    ("batch2_linear_d2_h6", 2, "LINEAR", None, 2, 6, (3, 10)),
]


def file_digest(checkpoint: Path) -> dict[str, str]:
    """sha256 of the files whose numbers matter (weights and normaliser statistics)."""
    names = sorted(p.name for p in checkpoint.glob("*.safetensors"))
    return {name: hashlib.sha256((checkpoint / name).read_bytes()).hexdigest() for name in names}


def build_checkpoint(out_dir: Path) -> Path:
    sys.path.insert(0, str(ROOT / "src" / "smolvla_policy"))
    from smolvla_policy.model.generate import make_tiny_checkpoint

    return make_tiny_checkpoint(out_dir, **CHECKPOINT)


def observation(cfg, images: dict, states, tasks: list[str]) -> dict:
    """LeRobot's robot-side observation: float images (B, 3, H, W) in [0, 1], raw state, task strings."""
    import torch

    obs: dict[str, object] = {}
    for key in cfg.image_features:
        obs[key] = torch.from_numpy(images[key]).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    obs["observation.state"] = torch.from_numpy(states).to(torch.float32)
    obs["task"] = tasks
    obs["robot_type"] = ""
    return obs


def run_case(case, cfg, policy, pre, post, rng, index: int):
    import numpy as np
    import torch
    from lerobot.configs.types import RTCAttentionSchedule
    from lerobot.policies.rtc.configuration_rtc import RTCConfig

    name, batch, schedule, max_weight, delay, horizon, (first, length) = case
    base = CHECKPOINT["rtc_config"]
    policy.config.rtc_config = RTCConfig(
        enabled=True,
        prefix_attention_schedule=RTCAttentionSchedule(schedule or base["prefix_attention_schedule"]),
        max_guidance_weight=float(max_weight or base["max_guidance_weight"]),
        execution_horizon=int(base["execution_horizon"]),
    )
    policy.init_rtc_processor()
    assert policy.model.rtc_processor is policy.rtc_processor and policy.model._rtc_enabled()

    _, height, width = CHECKPOINT["image_shape"]
    images = {
        key: rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8) for key in cfg.image_features
    }
    states = np.clip(rng.normal(size=(batch, 6)) * 2.0, -6.0, 6.0).astype(np.float32)  # within a turn (rad)
    tasks = [TASKS[(index + b) % len(TASKS)] for b in range(batch)]
    shape = (batch, cfg.chunk_size, cfg.max_action_dim)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(30_000 + index))
    prev_noise = torch.randn(shape, generator=torch.Generator().manual_seed(40_000 + index))

    def chunk(noise_tensor, **kwargs):
        policy.reset()
        batch_in = pre(observation(cfg, images, states, tasks))
        raw = policy.predict_action_chunk(batch_in, noise=noise_tensor.clone(), **kwargs)
        return raw, post(raw)

    prev_raw, _ = chunk(prev_noise)  # the previous chunk: no prev_chunk_left_over, so no guidance
    left_over = prev_raw[:, first : first + length].clone()
    left_over_actions = post(left_over.clone())
    guided_raw, guided = chunk(
        noise, prev_chunk_left_over=left_over, inference_delay=delay, execution_horizon=horizon
    )
    _, unguided = chunk(noise)
    again_raw, _ = chunk(
        noise, prev_chunk_left_over=left_over, inference_delay=delay, execution_horizon=horizon
    )
    assert torch.equal(again_raw, guided_raw), "LeRobot's RTC run is not deterministic"

    tensors = {
        f"{name}.noise": noise,
        f"{name}.input.observation.state": torch.from_numpy(states),
        f"{name}.prev_chunk_left_over": left_over,
        f"{name}.prev_chunk_actions": left_over_actions,
        f"{name}.output.raw_chunk": guided_raw,
        f"{name}.output.actions": guided,
        f"{name}.unguided.actions": unguided,
    }
    for key, value in images.items():
        tensors[f"{name}.input.{key}.uint8_bhwc"] = torch.from_numpy(value)
    meta = {
        "name": name,
        "batch": batch,
        "tasks": tasks,
        "prefix_attention_schedule": policy.config.rtc_config.prefix_attention_schedule.value,
        "max_guidance_weight": policy.config.rtc_config.max_guidance_weight,
        "inference_delay": delay,
        "execution_horizon": horizon,
        "prev_chunk_slice": [first, first + length],
        "guidance_effect_max_abs": float((guided - unguided).abs().max()),
    }
    return tensors, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import lerobot_reference

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = build_checkpoint(Path(tmp) / "checkpoint")
        cfg, policy, pre, post, missing, unexpected = lerobot_reference.load(checkpoint, "float32")
        assert not missing and not unexpected, (missing, unexpected)
        assert policy.config.rtc_config is not None and policy.config.rtc_config.enabled
        rng = np.random.default_rng(2026)
        tensors: dict[str, torch.Tensor] = {}
        cases = []
        for index, case in enumerate(CASES):
            case_tensors, meta = run_case(case, cfg, policy, pre, post, rng, index)
            tensors.update(case_tensors)
            cases.append(meta)
            print(
                f"{meta['name']}: guidance moves the actions by up to {meta['guidance_effect_max_abs']:.3g}"
            )
        digest = file_digest(checkpoint)

    args.out.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().to(torch.float32 if v.is_floating_point() else v.dtype).contiguous()
        for k, v in tensors.items()
    }
    save_file(tensors, str(args.out / "rtc_golden.safetensors"))
    meta = {
        "produced_by": "benchmarks/lerobot_rtc_golden.py",
        "lerobot_version": __import__("lerobot").__version__,
        "torch_version": torch.__version__,
        "path": "preprocessor -> SmolVLAPolicy.predict_action_chunk(batch, noise, prev_chunk_left_over, "
        "inference_delay, execution_horizon) -> postprocessor, float32, CPU, torch.no_grad (LeRobot's own)",
        "checkpoint": CHECKPOINT,
        "checkpoint_sha256": digest,
        "cases": cases,
    }
    (args.out / "rtc_golden.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
