"""``smolvla-eval``: evaluate a SmolVLA checkpoint offline on a rosbag2 recording."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from smolvla_common.bags import BagError, BagReader
from smolvla_common.joints import SO101_JOINTS
from smolvla_policy.evaluation.evaluate import (
    DEFAULT_STRIDE,
    EvalSettings,
    check_bag,
    evaluate_bag,
    read_ground_truth,
)
from smolvla_policy.evaluation.policies import GroundTruthPolicy, load_runtime_policy
from smolvla_policy.evaluation.report import _fmt, report_files, write_report
from smolvla_policy.model.checkpoint import CheckpointError
from smolvla_policy.runtime.units import parse_joint_units


def parse_cameras(specs: Sequence[str]) -> dict[str, str]:
    """``["top=/cameras/top/image_raw", "wrist"]`` -> camera -> topic (default /cameras/<name>/image_raw)."""
    cameras: dict[str, str] = {}
    for spec in specs:
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                continue
            name, _, topic = item.partition("=")
            name = name.strip()
            if not name or name in cameras:
                raise ValueError(f"--cameras: empty or repeated camera name in {item!r}")
            cameras[name] = topic.strip() or f"/cameras/{name}/image_raw"
    return cameras


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smolvla-eval",
        description="Evaluate a SmolVLA checkpoint offline on a rosbag2 recording (mcap or sqlite3).",
    )
    add = parser.add_argument
    add("bag", help="rosbag2 folder (ros2 bag record or smolvla-record)")
    add("--checkpoint", help="LeRobot SmolVLA checkpoint folder or cached hub repo id")
    add("--ground-truth", action="store_true", help="replay the recorded commands as the policy (zero error)")
    add(
        "--ground-truth-topic",
        default="/joint_commands",
        help="what was really commanded: JointTrajectory or JointState topic (e.g. /leader/joint_states)",
    )
    add("--joint-states-topic", default="/joint_states")
    add("--instruction-topic", default="/instruction")
    add(
        "--cameras",
        action="append",
        default=[],
        help="name=topic[,name=topic] (name = checkpoint image key suffix); default: the checkpoint's "
        "cameras on /cameras/<name>/image_raw",
    )
    add("--units", default="degrees", help="checkpoint joint units: degrees | range | radians")
    add(
        "--joint-units",
        default="",
        help="per-joint override of --units, comma-separated rad|deg|range_m100_100|range_0_100 "
        "(the policy node's joint_units; the simulated arm: deg,deg,deg,deg,deg,deg)",
    )
    add("--calibration", default="", help="LeRobot calibration JSON (needed for range units)")
    add("--units-check", default="strict", choices=("strict", "warn", "off"))
    add("--task", default="", help="instruction used while the bag has none")
    add("--stride", type=int, default=DEFAULT_STRIDE, help="one observation every N joint states")
    add("--max-samples", type=int, default=0, help="stop after N observations (0: all)")
    add("--max-age", type=float, default=0.5, help="max_observation_age_s of the policy node")
    add("--image-resize", default="refuse", choices=("refuse", "resize"))
    add("--fps", type=float, default=0.0, help="action rate; 0: the checkpoint's")
    add("--chunk-size", type=int, default=50, help="--ground-truth only: actions per chunk")
    add("--device", default="cpu")
    add("--dtype", default="float32")
    add("--vlm-path", default="")
    add("--seed", type=int, default=0, help="noise seed (runs are reproducible)")
    add("--gripper-threshold", type=float, default=None, help="rad; default: middle of the recorded range")
    add("--out", default="", help="report folder (default: a new reports/eval/<bag>-<time>)")
    add("--overwrite", action="store_true", help="replace the report already in --out")
    add("--no-plots", action="store_true")
    add("--no-progress", action="store_true")
    return parser


def make_policy(
    args: argparse.Namespace, cameras: dict[str, str], log: Callable[[str], None]
) -> tuple[Any, str]:
    """The policy the command line asks for and its name: the recorded commands, or the checkpoint."""
    if args.ground_truth:
        with BagReader(args.bag) as bag:
            truth = read_ground_truth(bag, args.ground_truth_topic, SO101_JOINTS)
        return GroundTruthPolicy(truth, 1.0 / (args.fps or 30.0), args.chunk_size), (
            f"ground truth ({args.ground_truth_topic})"
        )
    if not args.checkpoint:
        raise ValueError("give --checkpoint (or --ground-truth for a sanity check of the bag)")
    if not cameras:
        from smolvla_policy.runtime import CheckpointInfo

        keys = CheckpointInfo.from_checkpoint(args.checkpoint).image_keys
        cameras.update(parse_cameras([k.removeprefix("observation.images.") for k in keys]))
    policy = load_runtime_policy(
        args.checkpoint,
        list(cameras),
        units=args.units,
        joint_units=parse_joint_units(args.joint_units),
        calibration_file=args.calibration or None,
        task=args.task,
        device=args.device,
        dtype=args.dtype,
        vlm_path=args.vlm_path or None,
        seed=args.seed,
        units_check=args.units_check,
        image_resize=args.image_resize,
        max_observation_age_s=args.max_age,
        fps=args.fps or None,
    )
    for warning in policy.warnings:
        log(f"warning: {warning}")
    return policy, args.checkpoint


def _settings(args: argparse.Namespace, cameras: dict[str, str]) -> EvalSettings:
    return EvalSettings(
        camera_topics=cameras,
        joint_state_topic=args.joint_states_topic,
        ground_truth_topic=args.ground_truth_topic,
        instruction_topic=args.instruction_topic,
        task=args.task,
        stride=args.stride,
        max_samples=args.max_samples,
        gripper_threshold=args.gripper_threshold,
    )


def output_folder(args: argparse.Namespace) -> Path:
    """Where the report goes: ``--out`` (refused when it holds a report, unless ``--overwrite``), or a new
    ``reports/eval/<bag>-<time>`` folder."""
    if not args.out:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return Path("reports") / "eval" / f"{Path(args.bag.rstrip('/')).name}-{stamp}"
    out = Path(args.out)
    if report_files(out) and not args.overwrite:
        raise ValueError(
            f"--out {out} already holds a report ({', '.join(report_files(out))}); "
            "choose another --out, or pass --overwrite to replace it"
        )
    return out


def print_refusals(refusals: dict[str, int], log: Callable[[str], None]) -> None:
    """The refusal reasons, most frequent first, with their counts."""
    if refusals:
        log(f"refused observations ({sum(refusals.values())}), by reason:")
    for reason, count in sorted(refusals.items(), key=lambda item: -item[1]):
        log(f"  {count:5d} x {reason}")


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = log or (lambda text: print(text, file=sys.stderr))
    try:
        out = output_folder(args)
        cameras = parse_cameras(args.cameras)
        with BagReader(args.bag) as bag:  # the bag's problems first: they do not need the checkpoint
            check_bag(bag, _settings(args, cameras))
        policy, policy_id = make_policy(args, cameras, log)
        settings = _settings(args, cameras)
        result = evaluate_bag(args.bag, policy, settings, policy_id, progress=not args.no_progress)
    except (BagError, ValueError, FileNotFoundError, CheckpointError) as exc:
        log(f"smolvla-eval: error: {exc}")
        return 2
    path = write_report(result, out, plots=not args.no_plots)
    mae = result.metrics.get("mae", {}).get("all")
    print_refusals(result.refusals, log)
    log(
        f"{len(result.records)} chunks from {result.samples} observations "
        f"({sum(result.refusals.values())} refused); MAE {_fmt(mae)} rad; report: {path.parent}/report.html"
    )
    return 0 if result.records else 1


if __name__ == "__main__":
    sys.exit(main())
