"""Run LeRobot 0.4.4's own SmolVLA deployment path on a checkpoint and print timings as JSON.

Reference harness for ``benchmarks/bench_model.py``; it runs inside ``.venv-lerobot``
(``bash scripts/setup_lerobot_reference.sh``), never in the project venv and never in tests.

The path is LeRobot's: ``SmolVLAPolicy.from_pretrained(..., strict=True)`` (any missing or unexpected key, or
any shape mismatch, raises), ``make_pre_post_processors(pretrained_path=...)``, then per chunk
``preprocessor -> policy.predict_action_chunk(batch, noise=...) -> postprocessor``.

Inputs (``--inputs``, a safetensors file): one uint8 ``H x W x 3`` array per image key of the checkpoint, the
state under ``observation.state`` (float32, checkpoint units), the noise under ``noise`` (chunk_size x
max_action_dim) and the task in the metadata key ``task``. Without ``--inputs`` only the strict load is
checked.

Usage::

    .venv-lerobot/bin/python benchmarks/lerobot_reference.py CHECKPOINT [--inputs IN] [--out OUT]
        [--dtype float32|bfloat16] [--runs 5] [--warmup 1] [--serve]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resolve_vlm(checkpoint: Path, name: str) -> Path:
    for candidate in (Path(name), checkpoint / name, checkpoint.parent / name):
        if (candidate / "config.json").is_file():
            return candidate.resolve()
    raise SystemExit(f"vlm_model_name {name!r} is neither a folder nor next to the checkpoint {checkpoint}")


def apply_dtype_layout(policy, dtype: str) -> None:
    """float32: everything float32. bfloat16: the layout smolvla_base loads in (VLM and expert bf16; the
    expert's cross-attention k/v projections and the state/action projections float32)."""
    import torch

    policy.to(torch.float32)
    if dtype == "float32":
        return
    inner = policy.model.vlm_with_expert
    inner.vlm.to(torch.bfloat16)
    expert = inner.lm_expert
    hidden = expert.config.hidden_size
    expert.to(torch.bfloat16)
    for layer in expert.layers:
        attention = layer.self_attn
        if attention.k_proj.in_features != hidden:  # a cross-attention layer
            attention.k_proj.to(torch.float32)
            attention.v_proj.to(torch.float32)


def load(checkpoint: Path, dtype: str):
    import safetensors.torch
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    cfg = PreTrainedConfig.from_pretrained(str(checkpoint))
    vlm = str(resolve_vlm(checkpoint, cfg.vlm_model_name))
    cfg.vlm_model_name = vlm
    cfg.device = "cpu"
    policy = SmolVLAPolicy.from_pretrained(str(checkpoint), config=cfg, strict=True)
    # LeRobot built the text tower in its config dtype and cast the file's tensors into it; load the file
    # again into the requested layout so that float32 really holds the file's float32 values.
    apply_dtype_layout(policy, dtype)
    missing, unexpected = safetensors.torch.load_model(
        policy, str(checkpoint / "model.safetensors"), strict=True
    )
    policy.eval()
    pre, post = make_pre_post_processors(
        cfg,
        pretrained_path=str(checkpoint),
        preprocessor_overrides={
            "tokenizer_processor": {"tokenizer_name": vlm},
            "device_processor": {"device": "cpu"},
        },
    )
    return cfg, policy, pre, post, list(missing), list(unexpected)


class ChunkRunner:
    """LeRobot's per-chunk deployment path on fixed inputs, timed by phase."""

    def __init__(self, cfg, policy, pre, post, inputs: Path):
        import torch
        from safetensors import safe_open

        with safe_open(str(inputs), "pt") as f:
            names = f.keys()
            tensors = {k: f.get_tensor(k) for k in names}
            task = (f.metadata() or {}).get("task", "")
        self.observation: dict[str, object] = {}
        for (
            key
        ) in cfg.image_features:  # uint8 H x W x 3 -> float (1, 3, H, W) in [0, 1], as LeRobot's robots do
            self.observation[key] = tensors[key].permute(2, 0, 1).unsqueeze(0).to(torch.float32) / 255.0
        self.observation["observation.state"] = tensors["observation.state"].to(torch.float32).unsqueeze(0)
        self.observation["task"] = task
        self.observation["robot_type"] = ""
        self.noise = tensors["noise"].to(torch.float32).unsqueeze(0)
        self.policy, self.pre, self.post = policy, pre, post
        self.actions = None
        # time the denoising loop by wrapping LeRobot's own per-step method (a pure timer)
        self._denoise_s = 0.0
        model = policy.model
        original = model.denoise_step

        def timed_denoise_step(*a, **kw):
            t0 = time.perf_counter()
            out = original(*a, **kw)
            self._denoise_s += time.perf_counter() - t0
            return out

        model.denoise_step = timed_denoise_step

    def chunk(self) -> dict[str, float]:
        import torch

        self._denoise_s = 0.0
        with torch.inference_mode():
            t0 = time.perf_counter()
            batch = self.pre(dict(self.observation))
            t1 = time.perf_counter()
            raw = self.policy.predict_action_chunk(batch, noise=self.noise.clone())
            t2 = time.perf_counter()
            self.actions = self.post(raw)
            t3 = time.perf_counter()
        return {
            "preprocess": t1 - t0,
            "prefix": t2 - t1 - self._denoise_s,
            "denoise": self._denoise_s,
            "postprocess": t3 - t2,
            "total": t3 - t0,
        }

    def save(self, out: Path) -> None:
        import torch
        from safetensors.torch import save_file

        save_file({"actions": self.actions[0].to(torch.float32).contiguous()}, str(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--inputs", type=Path)
    parser.add_argument("--out", type=Path, help="write the actions (chunk x action_dim) here (safetensors)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="after loading, read commands from stdin: 'run' times one chunk, 'finish' saves and exits "
        "(one JSON line per answer); lets a benchmark interleave implementations",
    )
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint.resolve()
    start = time.perf_counter()
    cfg, policy, pre, post, missing, unexpected = load(checkpoint, args.dtype)
    result: dict[str, object] = {
        "implementation": "lerobot",
        "lerobot_version": __import__("lerobot").__version__,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "strict_load": True,
        "missing_keys": missing,
        "unexpected_keys": unexpected,
        "parameters": sum(p.numel() for p in policy.parameters()),
        "load_s": time.perf_counter() - start,
        "load_peak_rss_mb": peak_rss_mb(),
    }
    if args.inputs is None:
        print(json.dumps(result), flush=True)
        return 0
    runner = ChunkRunner(cfg, policy, pre, post, args.inputs)
    if args.serve:
        print(json.dumps(result), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "run":
                print(json.dumps(runner.chunk()), flush=True)
            elif command == "finish":
                if args.out:
                    runner.save(args.out)
                print(json.dumps({"peak_rss_mb": peak_rss_mb()}), flush=True)
                return 0
        return 0

    phases: dict[str, list[float]] = {}
    for run in range(args.warmup + args.runs):
        timings = runner.chunk()
        if run >= args.warmup:
            for name, value in timings.items():
                phases.setdefault(name, []).append(value)
    result["timings_s"] = {
        name: {"min": min(v), "median": statistics.median(v), "max": max(v), "runs": v}
        for name, v in phases.items()
    }
    result["peak_rss_mb"] = peak_rss_mb()
    result["actions_shape"] = list(runner.actions.shape)
    if args.out:
        runner.save(args.out)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
