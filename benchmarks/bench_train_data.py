"""How fast LeRobot's data loading feeds ``lerobot-train`` on a dataset, per video decoding backend.

Runs inside ``.venv-lerobot`` (``make bench-model-setup``): LeRobot 0.4.4's own ``LeRobotDataset`` with
SmolVLA's action chunk (``delta_timestamps``), the same random samples for every backend, in one process so
that the figures compare. Prints ms per sample and seconds per batch of 32 (what one data loader process
spends per training step).

    make bench-train-data DATASET=recordings/closed-loop/dataset ARGS="--samples 400"
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def ms_per_sample(root: Path, backend: str, indices: list[int], chunk: int) -> float:
    """Mean milliseconds of ``dataset[i]`` over ``indices`` (after one warm-up sample)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    fps = json.loads((root / "meta" / "info.json").read_text())["fps"]
    dataset = LeRobotDataset(
        "local/bench",
        root=root,
        video_backend=backend,
        delta_timestamps={"action": [i / fps for i in range(chunk)]},
    )
    dataset[indices[0]]
    start = time.perf_counter()
    for i in indices:
        dataset[i]
    return (time.perf_counter() - start) * 1000 / len(indices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="LeRobot dataset folder (make collect writes one)")
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--chunk", type=int, default=30, help="actions per sample (make train: 30)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    frames = json.loads((args.dataset / "meta" / "info.json").read_text())["total_frames"]
    rng = random.Random(args.seed)
    indices = [rng.randrange(frames) for _ in range(args.samples)]
    backends = ["pyav"] + (["torchcodec"] if importlib.util.find_spec("torchcodec") else [])
    print(f"{args.dataset}: {frames} frames, {args.samples} random samples, chunk {args.chunk}")
    for backend in backends:
        ms = ms_per_sample(args.dataset, backend, indices, args.chunk)
        print(f"  {backend:<11} {ms:6.1f} ms per sample   {ms * 32 / 1000:5.2f} s per batch of 32")
    if len(backends) == 1:
        print("  torchcodec  not installed (make bench-model-setup installs it where FFmpeg's libraries are)")


if __name__ == "__main__":
    main()
