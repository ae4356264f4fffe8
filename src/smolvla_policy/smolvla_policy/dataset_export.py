"""Bags -> LeRobotDataset v3.0 folder (``smolvla-export-dataset``), for fine-tuning SmolVLA with LeRobot.

Each bag is one episode. Frames are taken on a fixed ``fps`` grid from the first time every input has a
message to the last time the joint states and the actions both have one; at frame time ``t`` every feature is
the newest message received at or before ``t`` (the same rule the policy node and ``smolvla-eval`` use):

- ``observation.state``: ``/joint_states`` converted to the chosen LeRobot units (``degrees``: body joints in
  degrees, gripper 0..100; ``range``: -100..100 and gripper 0..100, which needs the calibration; ``radians``),
  with the policy runtime's own converter, so a policy trained on the export sees what the node feeds it;
- ``action``: the ground-truth topic (``/joint_commands`` JointTrajectory: the first point; or a JointState
  topic such as ``/leader/joint_states``) in the same units;
- ``observation.images.<camera>``: one mp4 per camera (PyAV; LeRobot's default AV1 ``libsvtav1``, or
  ``libx264`` / lossless ``libx264rgb`` with ``crf 0``);
- the task: ``--task``, else the bag's recorded episode task (recorder metadata), else the newest
  ``/instruction``.

Layout written (LeRobot ``CODEBASE_VERSION`` ``v3.0``): ``meta/info.json``, ``meta/stats.json``,
``meta/tasks.parquet``, ``meta/episodes/chunk-000/file-000.parquet``, ``data/chunk-000/file-000.parquet``,
``videos/<image key>/chunk-000/file-000.mp4``. All episodes go into one data file and one video file per
camera.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from smolvla_policy import bags
from smolvla_policy.bags import BagError, BagReader

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
VIDEO_CODECS = ("libsvtav1", "libx264", "libx264rgb")


@dataclass
class ExportSettings:
    camera_topics: dict[str, str]  # camera name -> topic; image key observation.images.<name>
    fps: float = 30.0
    units: str = "degrees"
    calibration_file: str | None = None
    joint_names: Sequence[str] = bags.SO101_JOINTS
    gripper_joint: str = "gripper"
    joint_state_topic: str = "/joint_states"
    action_topic: str = "/joint_commands"
    instruction_topic: str = "/instruction"
    task: str = ""
    robot_type: str = "so101_follower"
    vcodec: str = "libsvtav1"
    crf: int = 30
    gop: int = 2
    only_successful: bool = False  # skip episodes the operator marked as failed


@dataclass
class Episode:
    """What one bag contributed (frames written directly to the encoders)."""

    bag: str
    states: np.ndarray  # (T, J) in dataset units
    actions: np.ndarray  # (T, J)
    tasks: list[str]
    image_stats: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


class _VideoWriter:
    """One mp4 per camera; frames of successive episodes are appended (v3.0 packs episodes into one file)."""

    def __init__(self, path: Path, fps: float, vcodec: str, crf: int, gop: int):
        import av

        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only (its banner floods the terminal)
        if vcodec not in VIDEO_CODECS:
            raise ValueError(f"vcodec must be one of {VIDEO_CODECS}, got {vcodec!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.fps, self.vcodec, self.crf, self.gop = path, fps, vcodec, crf, gop
        self.container = av.open(str(path), "w")
        self.stream = None
        self.frames = 0
        self.size: tuple[int, int] | None = None

    def add(self, rgb: np.ndarray) -> None:
        import av

        height, width = rgb.shape[:2]
        if self.stream is None:
            if height % 2 or width % 2:
                raise ValueError(f"{self.path}: video frames need even sizes, got {width}x{height}")
            self.stream = self.container.add_stream(
                self.vcodec, rate=Fraction(self.fps).limit_denominator(1000)
            )
            self.stream.width, self.stream.height = width, height
            self.stream.pix_fmt = "rgb24" if self.vcodec == "libx264rgb" else "yuv420p"
            options = {"crf": str(self.crf), "g": str(self.gop)}
            if self.vcodec == "libx264rgb" and self.crf == 0:
                options["qp"] = "0"  # mathematically lossless
            self.stream.options = options
            self.size = (height, width)
        elif (height, width) != self.size:
            raise ValueError(
                f"{self.path}: frame size changed from {self.size[1]}x{self.size[0]} to {width}x{height}; "
                "a camera must keep one resolution across the exported bags"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()

    def info(self) -> dict:
        return {
            "video.height": self.size[0],
            "video.width": self.size[1],
            "video.codec": {"libsvtav1": "av1", "libx264": "h264", "libx264rgb": "h264"}[self.vcodec],
            "video.pix_fmt": self.stream.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": round(self.fps),
            "video.channels": 3,
            "has_audio": False,
        }


def _converter(settings: ExportSettings):
    from smolvla_policy.runtime import UnitConverter, joint_units_for_mode

    calibration = None
    if settings.calibration_file:
        from so100_driver.calibration import load_calibration

        calibration = load_calibration(settings.calibration_file)
    units = joint_units_for_mode(settings.units, list(settings.joint_names), settings.gripper_joint)
    try:
        return UnitConverter(list(settings.joint_names), units, calibration)
    except ValueError as exc:
        raise ValueError(f"units {settings.units!r}: {exc} (pass --calibration FILE)") from exc


def _positions(msg: Any, msgtype: str, names: Sequence[str], where: str) -> np.ndarray:
    if msgtype == bags.JOINT_TRAJECTORY:
        if not msg.points:
            raise BagError(f"{where}: a JointTrajectory without points")
        have, values = list(msg.joint_names), msg.points[0].positions
    else:
        have, values = list(msg.name), msg.position
    missing = [n for n in names if n not in have]
    if missing or len(values) != len(have):
        raise BagError(
            f"{where} ({msgtype}): lacks joints {missing} or has mismatched positions (names {have})"
        )
    return np.array([float(values[have.index(n)]) for n in names])


def _image_stats(
    sums: np.ndarray, squares: np.ndarray, mins: np.ndarray, maxs: np.ndarray, pixels: int, frames: int
):
    mean = sums / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean**2, 0.0))
    shape = (3, 1, 1)
    stats = {
        "min": (mins / 255.0).reshape(shape),
        "max": (maxs / 255.0).reshape(shape),
        "mean": (mean / 255.0).reshape(shape),
        "std": (std / 255.0).reshape(shape),
        "count": np.array([frames]),
    }
    for q in QUANTILES:  # LeRobot fills image quantiles too; the mean is a stand-in (images use IDENTITY)
        stats[f"q{round(q * 100):02d}"] = stats["mean"].copy()
    return stats


def vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    stats = {
        "min": values.min(axis=0),
        "max": values.max(axis=0),
        "mean": values.mean(axis=0),
        "std": values.std(axis=0),
        "count": np.array([len(values)]),
    }
    for q in QUANTILES:
        stats[f"q{round(q * 100):02d}"] = np.quantile(values, q, axis=0)
    return stats


def _episode_task(bag: BagReader, settings: ExportSettings) -> str:
    if settings.task.strip():
        return settings.task.strip()
    return read_episode_metadata(bag.path).get("task", "").strip()


def read_episode_metadata(bag_path: str | Path) -> dict:
    """Episode metadata written by the recorder (``episode.json`` next to ``metadata.yaml``), or {}."""
    sidecar = Path(bag_path) / "episode.json"
    if sidecar.is_file():
        try:
            return json.loads(sidecar.read_text())
        except json.JSONDecodeError as exc:
            raise BagError(f"bag {bag_path}: episode.json is not valid JSON ({exc})") from exc
    return {}


def export_episode(
    bag_path: str | Path, settings: ExportSettings, converter, videos: Mapping[str, _VideoWriter]
) -> Episode:
    """Read one bag and append its frames to the video writers; returns states, actions and tasks."""
    dt = 1.0 / settings.fps
    with BagReader(bag_path) as bag:
        wanted = {
            settings.joint_state_topic: [bags.JOINT_STATE],
            settings.action_topic: [bags.JOINT_TRAJECTORY, bags.JOINT_STATE],
        }
        wanted.update({t: list(bags.IMAGE_TYPES) for t in settings.camera_topics.values()})
        bag.require(wanted, "the dataset export")
        fixed_task = _episode_task(bag, settings)
        topics = list(wanted)
        if settings.instruction_topic in bag.topics:
            bag.require({settings.instruction_topic: [bags.STRING]}, "the task")
            topics.append(settings.instruction_topic)
        elif not fixed_task:
            raise BagError(
                f"bag {bag.path}: no {settings.instruction_topic} topic and no recorded task; pass --task"
            )
        # Frame grid: from the time every input has a message to the last joint state / action.
        first, last = {}, {}
        for conn in bag.reader.connections:
            if conn.topic in wanted:
                first.setdefault(conn.topic, None)
        for conn, log_time, _ in bag.raw_messages(list(wanted)):
            first[conn.topic] = first[conn.topic] if first.get(conn.topic) is not None else log_time
            last[conn.topic] = log_time
        start = max(first.values())
        end = min(last[settings.joint_state_topic], last[settings.action_topic])
        if end < start:
            raise BagError(f"bag {bag.path}: the inputs never overlap in time (nothing to export)")
        count = int(np.floor((end - start) * 1e-9 / dt + 1e-6)) + 1
        frame_times = start + np.round(np.arange(count) * dt * 1e9).astype(np.int64)

        camera_of = {topic: camera for camera, topic in settings.camera_topics.items()}
        latest: dict[str, tuple[Any, bytes]] = {}
        states, actions, tasks = [], [], []
        running = {
            c: [np.zeros(3), np.zeros(3), np.full(3, 255.0), np.zeros(3), 0] for c in settings.camera_topics
        }
        k = 0

        def emit(frame_time: int) -> None:
            where = f"bag {bag.path}"
            js = bag.decode(*latest[settings.joint_state_topic])
            act_conn, act_raw = latest[settings.action_topic]
            act = bag.decode(act_conn, act_raw)
            states.append(
                _positions(
                    js, bags.JOINT_STATE, settings.joint_names, f"{where}: {settings.joint_state_topic}"
                )
            )
            actions.append(
                _positions(act, act_conn.msgtype, settings.joint_names, f"{where}: {settings.action_topic}")
            )
            if fixed_task:
                tasks.append(fixed_task)
            else:
                instruction = latest.get(settings.instruction_topic)
                text = bag.decode(*instruction).data.strip() if instruction else ""
                if not text:
                    raise BagError(
                        f"{where}: frame at {frame_time * 1e-9:.3f} s has no instruction yet; pass --task"
                    )
                tasks.append(text)
            from smolvla_policy.evaluation import decode_image

            for topic, camera in camera_of.items():
                rgb = decode_image(bag.decode(*latest[topic]))
                videos[camera].add(rgb)
                acc = running[camera]
                pixels = rgb.reshape(-1, 3).astype(np.float64)
                acc[0] += pixels.sum(axis=0)
                acc[1] += (pixels**2).sum(axis=0)
                acc[2] = np.minimum(acc[2], pixels.min(axis=0))
                acc[3] = np.maximum(acc[3], pixels.max(axis=0))
                acc[4] += len(pixels)

        for conn, log_time, raw in bag.raw_messages(topics):
            while k < count and log_time > frame_times[k]:
                emit(int(frame_times[k]))
                k += 1
            latest[conn.topic] = (conn, raw)
        while k < count:
            emit(int(frame_times[k]))
            k += 1
    image_stats = {
        camera: _image_stats(acc[0], acc[1], acc[2], acc[3], max(1, acc[4]), count)
        for camera, acc in running.items()
    }
    return Episode(
        bag=str(bag_path),
        states=converter.to_checkpoint(np.array(states)),
        actions=converter.to_checkpoint(np.array(actions)),
        tasks=tasks,
        image_stats=image_stats,
    )


def _tasks_table(tasks: Sequence[str]):
    """meta/tasks.parquet as pandas writes ``DataFrame({"task_index": ...}, index=tasks)`` (LeRobot does)."""
    import pyarrow as pa

    table = pa.table(
        {
            "task_index": pa.array(range(len(tasks)), pa.int64()),
            "__index_level_0__": pa.array(list(tasks), pa.string()),
        }
    )
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": None,
                "field_name": "__index_level_0__",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _fixed_list(values: np.ndarray):
    import pyarrow as pa

    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _stats_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}


def export_dataset(
    bag_paths: Sequence[str | Path],
    out_dir: str | Path,
    settings: ExportSettings,
    log: Callable[[str], None] = lambda text: None,
) -> Path:
    """Write a LeRobotDataset v3.0 folder from ``bag_paths`` (one episode each); returns the folder.

    On any error the partly written folder is removed again (no half-written dataset is left behind).
    """
    import shutil

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"output folder {out} exists and is not empty; choose a new one")
    try:
        return _export(bag_paths, out, settings, log)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise


def _export(
    bag_paths: Sequence[str | Path], out: Path, settings: ExportSettings, log: Callable[[str], None]
) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not bag_paths:
        raise ValueError("no bags given")
    if settings.fps <= 0:
        raise ValueError(f"fps must be positive, got {settings.fps}")
    converter = _converter(settings)  # raises a clear error when range units lack a calibration
    keys = {camera: f"observation.images.{camera}" for camera in settings.camera_topics}
    videos = {
        camera: _VideoWriter(
            out / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0),
            settings.fps,
            settings.vcodec,
            settings.crf,
            settings.gop,
        )
        for camera, key in keys.items()
    }
    episodes: list[Episode] = []
    skipped = []
    try:
        for path in bag_paths:
            meta = read_episode_metadata(path)
            if settings.only_successful and meta.get("success") is False:
                skipped.append(str(path))
                continue
            before = {c: v.frames for c, v in videos.items()}
            episode = export_episode(path, settings, converter, videos)
            episode.video_from = {c: before[c] for c in videos}  # type: ignore[attr-defined]
            episodes.append(episode)
            log(f"{path}: {len(episode.states)} frames, task {episode.tasks[0]!r}")
    finally:
        for video in videos.values():
            video.close()
    if not episodes:
        raise ValueError(f"no episode exported (skipped as unsuccessful: {skipped})")

    task_list: list[str] = []
    for episode in episodes:
        for task in episode.tasks:
            if task not in task_list:
                task_list.append(task)
    names = [f"{n}.pos" for n in settings.joint_names]
    states = np.concatenate([e.states for e in episodes])
    actions = np.concatenate([e.actions for e in episodes])
    lengths = [len(e.states) for e in episodes]
    total = int(sum(lengths))
    frame_index = np.concatenate([np.arange(n) for n in lengths])
    episode_index = np.concatenate([np.full(n, i) for i, n in enumerate(lengths)])
    timestamps = (frame_index / settings.fps).astype(np.float32)
    task_index = np.array([task_list.index(t) for e in episodes for t in e.tasks], dtype=np.int64)
    data = pa.table(
        {
            "observation.state": _fixed_list(states),
            "action": _fixed_list(actions),
            "timestamp": pa.array(timestamps, pa.float32()),
            "frame_index": pa.array(frame_index, pa.int64()),
            "episode_index": pa.array(episode_index, pa.int64()),
            "index": pa.array(np.arange(total), pa.int64()),
            "task_index": pa.array(task_index, pa.int64()),
        }
    )
    data_file = out / DATA_PATH.format(chunk_index=0, file_index=0)
    data_file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(data, data_file)
    (out / "meta").mkdir(parents=True, exist_ok=True)
    pq.write_table(_tasks_table(task_list), out / "meta" / "tasks.parquet")

    features: dict[str, Any] = {
        "action": {"dtype": "float32", "shape": [len(names)], "names": names},
        "observation.state": {"dtype": "float32", "shape": [len(names)], "names": names},
    }
    for camera, key in keys.items():
        height, width = videos[camera].size
        features[key] = {
            "dtype": "video",
            "shape": [height, width, 3],
            "names": ["height", "width", "channels"],
            "info": videos[camera].info(),
        }
    for name, dtype in (
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
    ):
        features[name] = {"dtype": dtype, "shape": [1], "names": None}

    # Per-episode rows of meta/episodes and the aggregated meta/stats.json.
    rows: dict[str, list] = {}
    offset = 0
    episode_stats = []
    for i, episode in enumerate(episodes):
        n = len(episode.states)
        stats = {
            "action": vector_stats(episode.actions),
            "observation.state": vector_stats(episode.states),
            "timestamp": vector_stats(timestamps[offset : offset + n]),
            "frame_index": vector_stats(frame_index[offset : offset + n]),
            "episode_index": vector_stats(episode_index[offset : offset + n]),
            "index": vector_stats(np.arange(offset, offset + n)),
            "task_index": vector_stats(task_index[offset : offset + n]),
            **{keys[c]: s for c, s in episode.image_stats.items()},
        }
        episode_stats.append(stats)
        row = {
            "episode_index": i,
            "tasks": sorted(set(episode.tasks), key=episode.tasks.index),
            "length": n,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": offset,
            "dataset_to_index": offset + n,
        }
        for camera, key in keys.items():
            start = episode.video_from[camera] / settings.fps  # type: ignore[attr-defined]
            row.update(
                {
                    f"videos/{key}/chunk_index": 0,
                    f"videos/{key}/file_index": 0,
                    f"videos/{key}/from_timestamp": start,
                    f"videos/{key}/to_timestamp": start + n / settings.fps,
                }
            )
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        for feature, values in stats.items():
            for stat, value in values.items():
                row[f"stats/{feature}/{stat}"] = np.asarray(value, dtype=np.float64).reshape(-1).tolist()
        for key, value in row.items():
            rows.setdefault(key, []).append(value)
        offset += n
    episodes_file = out / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), episodes_file)

    all_frames_stats = {
        "action": vector_stats(actions),
        "observation.state": vector_stats(states),
        "timestamp": vector_stats(timestamps),
        "frame_index": vector_stats(frame_index),
        "episode_index": vector_stats(episode_index),
        "index": vector_stats(np.arange(total)),
        "task_index": vector_stats(task_index),
    }
    for key in keys.values():  # frame-weighted mean of the episode image statistics
        weights = np.array([len(e.states) for e in episodes], dtype=np.float64)
        per = [s[key] for s in episode_stats]
        mean = sum(w * p["mean"] for w, p in zip(weights, per, strict=True)) / weights.sum()
        second = (
            sum(w * (p["std"] ** 2 + p["mean"] ** 2) for w, p in zip(weights, per, strict=True))
            / weights.sum()
        )
        all_frames_stats[key] = {
            "min": np.min([p["min"] for p in per], axis=0),
            "max": np.max([p["max"] for p in per], axis=0),
            "mean": mean,
            "std": np.sqrt(np.maximum(second - mean**2, 0.0)),
            "count": np.array([total]),
            **{f"q{round(q * 100):02d}": mean.copy() for q in QUANTILES},
        }
    (out / "meta" / "stats.json").write_text(json.dumps(_stats_json(all_frames_stats), indent=4))

    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": settings.robot_type,
        "total_episodes": len(episodes),
        "total_frames": total,
        "total_tasks": len(task_list),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": round(settings.fps),
        "splits": {"train": f"0:{len(episodes)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if keys else None,
        "features": features,
        "joint_units": settings.units,  # not a LeRobot field: which convention the joint values follow
        "source_bags": [Path(e.bag).name for e in episodes],
    }
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    if skipped:
        log(f"skipped {len(skipped)} episode(s) marked unsuccessful: {skipped}")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smolvla-export-dataset",
        description="Convert rosbag2 recordings (one episode per bag) into a LeRobotDataset v3.0 folder.",
    )
    parser.add_argument("bags", nargs="+", help="rosbag2 folders, one episode each")
    parser.add_argument("--out", required=True, help="new dataset folder")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument(
        "--units",
        default="degrees",
        choices=("degrees", "range", "radians"),
        help="joint units of the dataset (LeRobot degree mode, range mode, or ROS radians)",
    )
    parser.add_argument(
        "--calibration", default="", help="LeRobot calibration JSON of the arm (range units, gripper)"
    )
    parser.add_argument(
        "--task", default="", help="task of every episode (default: recorded metadata / /instruction)"
    )
    parser.add_argument(
        "--cameras", action="append", default=[], help="name=topic[,name=topic]; default: top"
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


def main(argv: Sequence[str] | None = None) -> int:
    from smolvla_policy.evaluation import parse_cameras

    args = build_parser().parse_args(argv)

    def log(text: str) -> None:
        print(text, file=sys.stderr)

    try:
        settings = ExportSettings(
            camera_topics=parse_cameras(args.cameras or ["top"]),
            fps=args.fps,
            units=args.units,
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
        out = export_dataset(args.bags, args.out, settings, log)
    except (BagError, ValueError) as exc:
        log(f"smolvla-export-dataset: error: {exc}")
        return 2
    info = json.loads((out / "meta" / "info.json").read_text())
    log(
        f"wrote {out}: {info['total_episodes']} episodes, {info['total_frames']} frames, "
        f"{info['total_tasks']} tasks"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
