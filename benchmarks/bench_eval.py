"""Offline evaluation speed (``smolvla-eval``) with the real-size SmolVLA architecture: faster than real time?

Writes a synthetic bag (2 cameras at 480x640 / 30 fps, joint states and commands at 30 Hz) into
``.cache/bench_eval/`` and evaluates the real-size random-weight checkpoint on it (the one ``bench_model.py``
keeps in ``.cache/bench_model/``, generated there when missing), then prints per-chunk latency, wall time and
the real-time factor (bag seconds evaluated per wall second) for each stride.

Stride = one observation every N joint states. Deployment-like density is one chunk per executed horizon
(async execution of 50-action chunks at 30 fps with a 0.5 threshold requests about every 25 actions), so
``--strides 25`` is the figure that says whether evaluation keeps up with the recording.

    python benchmarks/bench_eval.py [--device cpu|cuda] [--dtype float32|bfloat16] [--duration 4]
                                    [--strides 25 10] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench_eval"
MODEL_CACHE = ROOT / ".cache" / "bench_model"


def machine_load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs"
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--duration", type=float, default=4.0, help="bag length in seconds")
    parser.add_argument("--strides", type=int, nargs="+", default=[25])
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test_support"))
    import synthetic_bags
    from smolvla_policy.evaluation import EvalSettings, evaluate_bag, load_runtime_policy
    from smolvla_policy.model.generate import make_real_size_checkpoint

    checkpoint = MODEL_CACHE / "real_size_float32"
    if not (checkpoint / "model.safetensors").exists():
        print(f"generating the real-size checkpoint into {checkpoint} (about 10 s)", file=sys.stderr)
        make_real_size_checkpoint(
            checkpoint, seed=0, dtype="float32", cameras=("top", "wrist"), image_shape=(3, 480, 640)
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    bag = CACHE / f"bag_{args.duration:g}s"
    if not (bag / "metadata.yaml").exists():
        shutil.rmtree(bag, ignore_errors=True)
        synthetic_bags.write_synthetic_bag(
            bag, "mcap", duration_s=args.duration, camera_fps=30.0, image_size=(480, 640)
        )

    from smolvla_common.calibration import ArmCalibration, save_calibration
    from smolvla_common.joints import SO101_JOINTS

    calibration = save_calibration(
        ArmCalibration.from_dict(
            {
                name: {"id": i + 1, "drive_mode": 0, "homing_offset": 0, "range_min": 1000, "range_max": 3000}
                for i, name in enumerate(SO101_JOINTS)
            }
        ),
        CACHE / "calibration.json",
    )
    started = time.perf_counter()
    policy = load_runtime_policy(
        str(checkpoint),
        ["top", "wrist"],
        calibration_file=str(calibration),
        units_check="off",
        device=args.device,
        dtype=args.dtype,
    )
    load_s = time.perf_counter() - started
    results = []
    for stride in args.strides:
        settings = EvalSettings(
            {"top": "/cameras/top/image_raw", "wrist": "/cameras/wrist/image_raw"}, stride=stride
        )
        result = evaluate_bag(bag, policy, settings, "real-size random", progress=False)
        latency = result.metrics["latency"]
        figures = {
            "stride": stride,
            "chunks": len(result.records),
            "latency_mean_s": latency.get("mean"),
            "latency_p95_s": latency.get("p95"),
            "wall_s": result.wall_time_s,
            "bag_s": result.bag_duration_s,
            "real_time_factor": result.bag_duration_s / result.wall_time_s,
        }
        results.append(figures)
    print(
        f"machine load (1/5/15 min): {machine_load()}; device {args.device}/{args.dtype}; "
        f"model load {load_s:.1f} s"
    )
    print(
        f"{'stride':>6} {'chunks':>6} {'latency mean':>13} {'p95':>8} {'wall':>7} {'bag':>6} "
        f"{'x real time':>11}"
    )
    for r in results:
        print(
            f"{r['stride']:>6} {r['chunks']:>6} {r['latency_mean_s'] * 1e3:>10.0f} ms "
            f"{r['latency_p95_s'] * 1e3:>5.0f} ms"
            f" {r['wall_s']:>6.1f}s {r['bag_s']:>5.1f}s {r['real_time_factor']:>11.2f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"load": machine_load(), "device": args.device, "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
