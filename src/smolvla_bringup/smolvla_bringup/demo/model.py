"""The demo's model: a given checkpoint, the repository's trained ``checkpoints/sim-pick-cube``,
lerobot/smolvla_base from the hub or its cache, or a generated random-weight SmolVLA (real size, or tiny), and
the parameter file that fits the sim to it."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from so100_driver.sim.expert import HOME
from so100_driver.sim.task import HELD_OUT_SEEDS_FROM

HUB_CHECKPOINT = "lerobot/smolvla_base"
SHIPPED_CHECKPOINT = Path("checkpoints") / "sim-pick-cube"  # trained on this sim's task (make collect, train)
GENERATED_VERSION = "v1"  # bump when the generated demo checkpoints change
# LeRobot degree-mode statistics (body joints in degrees, gripper 0..100) for the generated models.
DEMO_STATS = {
    key: {
        "mean": [0.0, -20.0, 30.0, 10.0, 0.0, 30.0],
        "std": [25.0, 20.0, 20.0, 15.0, 30.0, 15.0],
        "min": [-90.0, -100.0, -60.0, -80.0, -150.0, 0.0],
        "max": [90.0, 60.0, 110.0, 90.0, 150.0, 80.0],
    }
    for key in ("observation.state", "action")
}
UNTRAINED_BANNER = """
  ##########################################################################################
  #  UNTRAINED MODEL: {what}
  #  The architecture is SmolVLA's, the weights are RANDOM: the arm moves, but not with
  #  purpose. This demo shows the pipeline (cameras -> policy -> chunks -> executor -> arm).
  #  For a real policy: make demo ARGS="--checkpoint lerobot/smolvla_base" (needs the hub)
  #  or ARGS="--checkpoint /path/to/your/finetune/pretrained_model".
  ##########################################################################################
"""


def cache_dir() -> Path:
    """Where generated models live: ``$XDG_CACHE_HOME/smolvla_ros``, else ``.cache/smolvla_ros`` here."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.cwd() / ".cache") / "smolvla_ros"


def make_demo_checkpoint(out_dir: Path, tiny: bool) -> Path:
    """A random-weight SmolVLA for the sim (cameras top + wrist, 256x256, 30 fps), generated once.

    Written to a temporary folder first and renamed, so an interrupted generation is never reused.
    """
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and (out_dir / "model.safetensors").is_file():
        return out_dir
    from smolvla_policy.model.generate import make_real_size_checkpoint, make_tiny_checkpoint

    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    stats = {k: {s: np.asarray(v, float) for s, v in d.items()} for k, d in DEMO_STATS.items()}
    common = {"cameras": ("top", "wrist"), "image_shape": (3, 256, 256), "stats": stats, "fps": 30.0}
    if tiny:
        make_tiny_checkpoint(partial, **common)
    else:
        make_real_size_checkpoint(partial, dtype="bfloat16", **common)
    partial.rename(out_dir)
    return out_dir


def hub_checkpoint(repo: str = HUB_CHECKPOINT, timeout_s: float = 5.0) -> tuple[str | None, str]:
    """(repo, "") when the hub or its local cache has the checkpoint and its backbone files; else (None, why).

    With ``HF_HUB_OFFLINE=1`` only the local cache is consulted; otherwise the hub gets one quick request
    first, so an unreachable hub costs seconds, not a long download timeout.
    """
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not offline:
        try:
            from huggingface_hub import HfApi

            HfApi().model_info(repo, timeout=timeout_s)
        except Exception as err:  # no network, DNS failure, timeout, hub error
            return None, f"the hub did not answer ({type(err).__name__})"
    try:
        from smolvla_policy.model.checkpoint import read_json, resolve_checkpoint_dir, resolve_vlm_dir

        folder = resolve_checkpoint_dir(repo)
        resolve_vlm_dir(read_json(folder / "config.json")["vlm_model_name"], folder)
        return repo, ""
    except Exception as err:  # not cached, incomplete cache, failed download: use the random model
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return None, ("offline (HF_HUB_OFFLINE=1) and not cached: " if offline else "") + reason[:200]


@dataclass
class ModelChoice:
    checkpoint: str
    description: str
    untrained: bool
    real_size: bool


def shipped_checkpoint(root: Path | None = None) -> Path | None:
    """The trained sim checkpoint of the repository at ``root`` (the working directory), None if absent."""
    folder = (root or Path.cwd()) / SHIPPED_CHECKPOINT
    return folder if (folder / "model.safetensors").is_file() else None


def choose_model(args) -> ModelChoice:
    if args.checkpoint:
        return ModelChoice(args.checkpoint, f"your checkpoint {args.checkpoint}", False, True)
    if args.tiny:
        path = make_demo_checkpoint(cache_dir() / f"demo-tiny-{GENERATED_VERSION}", tiny=True)
        return ModelChoice(str(path), "tiny random SmolVLA (--tiny)", True, False)
    shipped = None if args.random else shipped_checkpoint()
    if shipped is not None:
        description = f"{SHIPPED_CHECKPOINT} (a small SmolVLA trained in this simulation to pick up the cube)"
        return ModelChoice(str(shipped), description, False, False)
    if not args.random:
        print(f"demo: no trained {SHIPPED_CHECKPOINT} in {Path.cwd()} (run from the repository's root)")
        print(f"demo: looking for {HUB_CHECKPOINT} (hub or local cache) ...", flush=True)
        repo, why = hub_checkpoint()
        if repo:
            return ModelChoice(repo, f"{repo} (pretrained)", False, True)
        print(f"demo: {HUB_CHECKPOINT} is not available: {why}", flush=True)
    folder = cache_dir() / f"demo-random-real-size-{GENERATED_VERSION}"
    if not folder.is_dir():
        print(
            f"demo: generating a random-weight SmolVLA (450 M parameters, once) into {folder} ...", flush=True
        )
    started = time.monotonic()
    path = make_demo_checkpoint(folder, tiny=False)
    if time.monotonic() - started > 1.0:
        print(f"demo: generated in {time.monotonic() - started:.0f} s", flush=True)
    return ModelChoice(str(path), "random-weight SmolVLA, real size (450 M parameters)", True, True)


def checkpoint_cameras(checkpoint: str) -> tuple[tuple[str, ...], tuple[int, int]]:
    """The policy's camera entries for the sim and the image size (height, width) of a checkpoint folder or
    a cached hub repo (what :func:`smolvla_bringup.graph.checkpoint_parameters` cannot read)."""
    from smolvla_bringup.graph import camera_entries
    from smolvla_policy.runtime import CheckpointInfo

    info = CheckpointInfo.from_checkpoint(checkpoint)
    _, height, width = next(iter(info.image_shapes.values()))
    return tuple(camera_entries(list(info.image_shapes))), (int(height), int(width))


def demo_parameters(model: ModelChoice, args) -> dict:
    """The demo's own parameter file (applied after the sim graph's): model, camera map, sizes, device."""
    cameras, (height, width) = checkpoint_cameras(model.checkpoint)
    device = args.device or default_device()
    dtype = args.dtype or ("bfloat16" if model.real_size and fast_bfloat16(device) else "float32")
    policy = {
        "checkpoint": model.checkpoint,
        "cameras": list(cameras),
        "device": device,
        "dtype": dtype,
        "image_resize": "resize",  # should the checkpoint's cameras differ in size
        "max_observation_age_s": 2.0,
    }
    # the demo's attempts start the executor, home the arm and place the cube (held-out placements)
    executor: dict[str, object] = {"start_on_launch": False}
    if model.real_size and device == "cpu":
        policy["warmup"] = False  # a warm-up pass costs as much as a chunk here
        # Seconds per chunk, more than a chunk's horizon (1.7 s at 30 Hz): a chunk requested early (async)
        # would lie entirely in the past when it arrives and be dropped as stale; sync mode asks when the
        # plan is done, and the executor then plays the whole chunk from where the arm stopped.
        executor["mode"] = "sync"
    arm = {
        "cameras": [c.split(":")[0] for c in cameras],
        "camera_width": int(width),
        "camera_height": int(height),
        "task_seed": HELD_OUT_SEEDS_FROM,
        "initial_positions": HOME.tolist(),
    }
    return {
        "/**/arm": {"ros__parameters": arm},
        "/**/policy": {"ros__parameters": policy},
        "/**/executor": {"ros__parameters": executor},
    }


def fast_bfloat16(device: str) -> bool:
    """bfloat16 pays off on a GPU and on CPUs with oneDNN's bf16 kernels; elsewhere float32 is faster."""
    if device.startswith("cuda"):
        return True
    from smolvla_policy.model.network import onednn_bf16_supported

    return onednn_bf16_supported()


def default_device() -> str:
    """cuda when this machine's torch sees a GPU, else cpu (the demo process runs the policy anyway)."""
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"
