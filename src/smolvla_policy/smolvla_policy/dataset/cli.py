"""Command line of ``smolvla-export-dataset``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from smolvla_common.bags import BagError
from smolvla_policy.dataset.layout import export_dataset
from smolvla_policy.dataset.settings import ExportSettings
from smolvla_policy.dataset.video import VIDEO_CODECS
from smolvla_policy.runtime.units import parse_joint_units

PROG = "smolvla-export-dataset"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``smolvla-export-dataset``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Convert rosbag2 recordings (one episode per bag) into a LeRobotDataset v3.0 folder.",
    )
    parser.add_argument("bags", nargs="+", help="rosbag2 folders, one episode each")
    parser.add_argument("--out", required=True, help="new dataset folder")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate, a whole number (default 30)")
    parser.add_argument(
        "--units",
        default="degrees",
        choices=("degrees", "range", "radians"),
        help="joint units of the dataset (LeRobot degree mode, range mode, or ROS radians)",
    )
    parser.add_argument(
        "--joint-units",
        default="",
        help="per-joint override of --units, comma-separated rad|deg|range_m100_100|range_0_100 in joint "
        "order (the policy node's joint_units; the simulated arm uses deg,deg,deg,deg,deg,deg)",
    )
    parser.add_argument(
        "--calibration", default="", help="LeRobot calibration JSON of the arm (range units, gripper)"
    )
    parser.add_argument(
        "--task", default="", help="task of every episode (default: recorded metadata / /instruction)"
    )
    parser.add_argument(
        "--cameras",
        action="append",
        default=[],
        help="name=topic[,name=topic]; default: every image topic of the bags (/cameras/<name>/... -> name)",
    )
    parser.add_argument("--joint-states-topic", default="/joint_states")
    parser.add_argument(
        "--action-topic",
        default="/joint_commands",
        help="what was commanded: /joint_commands (JointTrajectory) or /leader/joint_states",
    )
    parser.add_argument("--instruction-topic", default="/instruction")
    parser.add_argument("--robot-type", default="so101_follower")
    parser.add_argument("--vcodec", default="libsvtav1", choices=VIDEO_CODECS)
    parser.add_argument("--crf", type=int, default=30, help="0 with libx264rgb is lossless")
    parser.add_argument(
        "--gop", type=int, default=2, help="keyframe interval (LeRobot uses 2 for fast seeking)"
    )
    parser.add_argument("--only-successful", action="store_true", help="skip episodes recorded as failed")
    return parser


def settings_from_args(args: argparse.Namespace) -> ExportSettings:
    """:class:`ExportSettings` from parsed arguments (no ``--cameras``: every camera of the bags)."""
    from smolvla_policy.evaluation import parse_cameras

    return ExportSettings(
        camera_topics=parse_cameras(args.cameras) if args.cameras else None,
        fps=args.fps,
        units=args.units,
        joint_units=parse_joint_units(args.joint_units),
        calibration_file=args.calibration or None,
        joint_state_topic=args.joint_states_topic,
        action_topic=args.action_topic,
        instruction_topic=args.instruction_topic,
        task=args.task,
        robot_type=args.robot_type,
        vcodec=args.vcodec,
        crf=args.crf,
        gop=args.gop,
        only_successful=args.only_successful,
    )


def _log(text: str) -> None:
    print(text, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Export the bags; 0 on success, 2 on a bag or settings error (reported on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        out = export_dataset(args.bags, args.out, settings_from_args(args), _log)
    except (BagError, ValueError) as exc:
        _log(f"{PROG}: error: {exc}")
        return 2
    info = json.loads((out / "meta" / "info.json").read_text())
    cameras = [k for k, f in info["features"].items() if f["dtype"] == "video"]
    _log(
        f"wrote {out}: {info['total_episodes']} episodes, {info['total_frames']} frames "
        f"at {info['fps']} fps, "
        f"{info['total_tasks']} tasks, {len(cameras)} cameras ({', '.join(cameras) or 'none'}), "
        f"units {args.joint_units or args.units}"
    )
    return 0
