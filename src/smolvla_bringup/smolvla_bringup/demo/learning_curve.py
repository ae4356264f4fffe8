"""The learning curve of a ``make train`` run: every saved checkpoint scored offline and in closed loop.

For each ``train/checkpoints/<step>/pretrained_model`` of the run folder: the offline evaluator's action
MAE (rad) on held-out recorded bags (``smolvla-eval``, the sim's joint units) and the closed-loop success on
held-out placements (:mod:`smolvla_bringup.demo.closed_loop`, one async row, no added latency). Printed as a
table and written to ``reports/learning-curve-<time>/``.

    python benchmarks/bench_learning_curve.py outputs/closed-loop --bags recordings/held-out/episode_* \
        --episodes 5 --every 1000
    python benchmarks/bench_learning_curve.py outputs/closed-loop --episodes 20 --every 1000 --noise-scale 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from smolvla_bringup.demo import closed_loop
from smolvla_bringup.demo.model import checkpoint_cameras
from smolvla_policy.training import package_checkpoints

SIM_JOINT_UNITS = "deg,deg,deg,deg,deg,deg"  # sim.yaml's joint_units for the policy node


def checkpoint_steps(run: Path) -> dict[int, Path]:
    """Saved checkpoints of the run by training step, each made self-contained."""
    return {int(m.parent.name): m for m in package_checkpoints(run)}


def offline_mae(checkpoint: Path, bags: Sequence[str], stride: int) -> float | None:
    """Mean over ``bags`` of the offline evaluator's MAE of all joints (rad); None if no bag scored."""
    from smolvla_policy.evaluation.cli import main as evaluate

    values = []
    with tempfile.TemporaryDirectory(prefix="learning_curve_") as folder:
        for index, bag in enumerate(bags):
            out = Path(folder) / str(index)
            argv = [bag, "--checkpoint", str(checkpoint), "--units", "degrees"]
            argv += ["--joint-units", SIM_JOINT_UNITS, "--image-resize", "resize"]
            argv += ["--stride", str(stride), "--out", str(out)]
            if evaluate([*argv, "--no-plots", "--no-progress"], log=lambda _: None) == 0:
                values.append(json.loads((out / "report.json").read_text())["metrics"]["mae"]["all"])
    return statistics.fmean(values) if values else None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder of scripts/train_policy.py (--output-dir)")
    parser.add_argument("--bags", nargs="*", default=[], help="held-out recorded bags (not in the dataset)")
    parser.add_argument("--episodes", type=int, default=5, help="closed-loop episodes per checkpoint")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per closed-loop episode")
    parser.add_argument("--every", type=int, default=1, help="score checkpoints whose step is a multiple")
    parser.add_argument("--stride", type=int, default=10, help="offline: one observation every N states")
    parser.add_argument("--seed", type=int, default=closed_loop.HELD_OUT_SEEDS_FROM, help="placements seed")
    parser.add_argument("--report-dir", default="reports")
    closed_loop.add_noise_arguments(parser)
    args = parser.parse_args(argv)
    closed_loop.check_noise_arguments(parser, args)
    if not (Path(args.run) / "train" / "checkpoints").is_dir():
        parser.error(f"{args.run}: no train/checkpoints (scripts/train_policy.py --output-dir)")
    if args.seed < closed_loop.HELD_OUT_SEEDS_FROM:
        parser.error(f"--seed {args.seed}: closed-loop placements must be held out (>= 1000)")
    return args


def closed_loop_options(args: argparse.Namespace, model: Path) -> closed_loop.Options:
    """How one checkpoint is scored in closed loop: the run's placements, timeout and sampling noise."""
    cameras, size = checkpoint_cameras(str(model))
    return closed_loop.Options(
        checkpoint=str(model), episodes=args.episodes, seed=args.seed, timeout_s=args.timeout,
        cameras=cameras, image_size=size, noise_seed=args.noise_seed, noise_scale=args.noise_scale,
        log=lambda _: None,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    steps = {s: m for s, m in sorted(checkpoint_steps(Path(args.run)).items()) if s % args.every == 0}
    lines = [
        "| step | offline MAE, held-out bags (rad) | closed-loop success (async) "
        "| median time to success (s) | median closest approach / lift (cm) |",
        "|---|---|---|---|---|",
    ]
    for step, model in steps.items():
        mae = offline_mae(model, args.bags, args.stride) if args.bags else None
        options = closed_loop_options(args, model)
        row = closed_loop.score([closed_loop.RowSpec("policy", "async", 0.0)], options)[0].summary()
        median = row["median_time_to_success_s"]
        lines.append(
            f"| {step} | {'-' if mae is None else f'{mae:.3f}'} | {row['successes']}/{row['episodes']}"
            f"{' ' + row['error'] if row['error'] else ''} | {'-' if median is None else f'{median:.1f}'} "
            f"| {closed_loop.centimetres(row['median_closest_approach_m'])} / "
            f"{closed_loop.centimetres(row['median_highest_lift_m'])} |"
        )
        print(lines[-1], flush=True)
    folder = Path(args.report_dir) / f"learning-curve-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/bench_learning_curve.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (folder / "table.md").write_text(f"`{command}`\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"learning curve: {folder / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
