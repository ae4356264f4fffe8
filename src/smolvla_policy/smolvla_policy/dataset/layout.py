"""The LeRobotDataset v3.0 folder: paths, parquet tables, info.json, stats.json (:func:`export_dataset`).

All episodes go into chunk 0, file 0: one data parquet, one episodes parquet and one mp4 per camera.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smolvla_policy.dataset.episode import Episode, export_episode, make_converter, read_episode_metadata
from smolvla_policy.dataset.settings import ExportSettings
from smolvla_policy.dataset.stats import Stats, aggregate_image_stats, columns_stats, stats_json
from smolvla_policy.dataset.video import VideoWriter

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
_INDEX_FEATURES = (
    ("timestamp", "float32"),
    ("frame_index", "int64"),
    ("episode_index", "int64"),
    ("index", "int64"),
    ("task_index", "int64"),
)


@dataclass
class Frames:
    """The per-frame columns of all episodes, concatenated in episode order."""

    states: np.ndarray
    actions: np.ndarray
    timestamps: np.ndarray
    frame_index: np.ndarray
    episode_index: np.ndarray
    index: np.ndarray
    task_index: np.ndarray

    @classmethod
    def of(cls, episodes: Sequence[Episode], task_list: Sequence[str], fps: float) -> Frames:
        """Concatenate the episodes' states and actions and number their frames."""
        lengths = [len(e.states) for e in episodes]
        frame_index = np.concatenate([np.arange(n) for n in lengths])
        return cls(
            states=np.concatenate([e.states for e in episodes]),
            actions=np.concatenate([e.actions for e in episodes]),
            timestamps=(frame_index / fps).astype(np.float32),
            frame_index=frame_index,
            episode_index=np.concatenate([np.full(n, i) for i, n in enumerate(lengths)]),
            index=np.arange(int(sum(lengths))),
            task_index=np.array([task_list.index(t) for e in episodes for t in e.tasks], dtype=np.int64),
        )

    def columns(self, rows: slice = slice(None)) -> dict[str, np.ndarray]:
        """The columns that get statistics, in ``stats.json`` order (``rows``: one episode's frames)."""
        return {
            "action": self.actions[rows],
            "observation.state": self.states[rows],
            "timestamp": self.timestamps[rows],
            "frame_index": self.frame_index[rows],
            "episode_index": self.episode_index[rows],
            "index": self.index[rows],
            "task_index": self.task_index[rows],
        }


def export_dataset(
    bag_paths: Sequence[str | Path],
    out_dir: str | Path,
    settings: ExportSettings,
    log: Callable[[str], None] = lambda text: None,
) -> Path:
    """Write a LeRobotDataset v3.0 folder from ``bag_paths`` (one episode each); returns the folder.

    On any error the partly written folder is removed again (no half-written dataset is left behind).
    """
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
    """:func:`export_dataset` without the clean-up: check, read the bags, write every file."""
    if not bag_paths:
        raise ValueError("no bags given")
    if settings.fps <= 0:
        raise ValueError(f"fps must be positive, got {settings.fps}")
    converter = make_converter(settings)  # raises a clear error when range units lack a calibration
    keys = {camera: f"observation.images.{camera}" for camera in settings.camera_topics}
    videos = _open_videos(out, keys, settings)
    episodes, skipped = _read_episodes(bag_paths, settings, converter, videos, log)
    if not episodes:
        raise ValueError(f"no episode exported (skipped as unsuccessful: {skipped})")
    task_list = _task_list(episodes)
    frames = Frames.of(episodes, task_list, settings.fps)
    write_data(out, frames)
    (out / "meta").mkdir(parents=True, exist_ok=True)
    write_tasks(out, task_list)
    episode_stats = write_episodes(out, episodes, frames, keys, settings.fps)
    write_stats(out, frames, episode_stats, keys.values(), [len(e.states) for e in episodes])
    write_info(out, _info(settings, episodes, frames, task_list, keys, videos))
    if skipped:
        log(f"skipped {len(skipped)} episode(s) marked unsuccessful: {skipped}")
    return out


def _open_videos(out: Path, keys: Mapping[str, str], settings: ExportSettings) -> dict[str, VideoWriter]:
    """One video writer per camera, at the v3.0 video path of its image key."""
    return {
        camera: VideoWriter(
            out / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0),
            settings.fps,
            settings.vcodec,
            settings.crf,
            settings.gop,
        )
        for camera, key in keys.items()
    }


def _read_episodes(
    bag_paths: Sequence[str | Path],
    settings: ExportSettings,
    converter: Any,
    videos: Mapping[str, VideoWriter],
    log: Callable[[str], None],
) -> tuple[list[Episode], list[str]]:
    """Export every bag (skipping failed ones when asked) and close the videos; (episodes, skipped bags)."""
    episodes: list[Episode] = []
    skipped: list[str] = []
    try:
        for path in bag_paths:
            meta = read_episode_metadata(path)
            if settings.only_successful and meta.get("success") is False:
                skipped.append(str(path))
                continue
            before = {c: v.frames for c, v in videos.items()}
            episode = export_episode(path, settings, converter, videos)
            episode.video_from = before
            episodes.append(episode)
            log(f"{path}: {len(episode.states)} frames, task {episode.tasks[0]!r}")
    finally:
        for video in videos.values():
            video.close()
    return episodes, skipped


def _task_list(episodes: Sequence[Episode]) -> list[str]:
    """The distinct tasks in order of first appearance (task index = position)."""
    task_list: list[str] = []
    for episode in episodes:
        for task in episode.tasks:
            if task not in task_list:
                task_list.append(task)
    return task_list


def _fixed_list(values: np.ndarray) -> Any:
    """A (T, J) array as a pyarrow fixed-size list column of float32."""
    import pyarrow as pa

    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def write_data(out: Path, frames: Frames) -> None:
    """``data/chunk-000/file-000.parquet``: one row per frame."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = pa.table(
        {
            "observation.state": _fixed_list(frames.states),
            "action": _fixed_list(frames.actions),
            "timestamp": pa.array(frames.timestamps, pa.float32()),
            "frame_index": pa.array(frames.frame_index, pa.int64()),
            "episode_index": pa.array(frames.episode_index, pa.int64()),
            "index": pa.array(frames.index, pa.int64()),
            "task_index": pa.array(frames.task_index, pa.int64()),
        }
    )
    data_file = out / DATA_PATH.format(chunk_index=0, file_index=0)
    data_file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(data, data_file)


def _pandas_column(name: str | None, field_name: str | None, pandas_type: str, numpy_type: str) -> dict:
    """One column entry of the pandas schema metadata."""
    return {
        "name": name,
        "field_name": field_name,
        "pandas_type": pandas_type,
        "numpy_type": numpy_type,
        "metadata": None,
    }


def tasks_table(tasks: Sequence[str]) -> Any:
    """meta/tasks.parquet as pandas writes ``DataFrame({"task_index": ...}, index=tasks)`` (LeRobot does)."""
    import pyarrow as pa

    table = pa.table(
        {
            "task_index": pa.array(range(len(tasks)), pa.int64()),
            "__index_level_0__": pa.array(list(tasks), pa.string()),
        }
    )
    column_index = {**_pandas_column(None, None, "unicode", "object"), "metadata": {"encoding": "UTF-8"}}
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [column_index],
        "columns": [
            _pandas_column("task_index", "task_index", "int64", "int64"),
            _pandas_column(None, "__index_level_0__", "unicode", "object"),
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def write_tasks(out: Path, task_list: Sequence[str]) -> None:
    """``meta/tasks.parquet``."""
    import pyarrow.parquet as pq

    pq.write_table(tasks_table(task_list), out / "meta" / "tasks.parquet")


def _episode_row(
    i: int, episode: Episode, offset: int, keys: Mapping[str, str], fps: float, stats: Mapping[str, Stats]
) -> dict[str, Any]:
    """One row of ``meta/episodes``: indices, video spans and the episode's statistics."""
    n = len(episode.states)
    row: dict[str, Any] = {
        "episode_index": i,
        "tasks": sorted(set(episode.tasks), key=episode.tasks.index),
        "length": n,
        "data/chunk_index": 0,
        "data/file_index": 0,
        "dataset_from_index": offset,
        "dataset_to_index": offset + n,
    }
    for camera, key in keys.items():
        start = episode.video_from[camera] / fps
        row.update(
            {
                f"videos/{key}/chunk_index": 0,
                f"videos/{key}/file_index": 0,
                f"videos/{key}/from_timestamp": start,
                f"videos/{key}/to_timestamp": start + n / fps,
            }
        )
    row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
    for feature, values in stats.items():
        for stat, value in values.items():
            row[f"stats/{feature}/{stat}"] = np.asarray(value, dtype=np.float64).reshape(-1).tolist()
    return row


def write_episodes(
    out: Path, episodes: Sequence[Episode], frames: Frames, keys: Mapping[str, str], fps: float
) -> list[dict[str, Stats]]:
    """``meta/episodes/chunk-000/file-000.parquet``; returns each episode's statistics."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: dict[str, list] = {}
    offset = 0
    episode_stats = []
    for i, episode in enumerate(episodes):
        n = len(episode.states)
        stats = {
            **columns_stats(frames.columns(slice(offset, offset + n))),
            **{keys[c]: s for c, s in episode.image_stats.items()},
        }
        episode_stats.append(stats)
        for key, value in _episode_row(i, episode, offset, keys, fps, stats).items():
            rows.setdefault(key, []).append(value)
        offset += n
    episodes_file = out / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), episodes_file)
    return episode_stats


def write_stats(
    out: Path,
    frames: Frames,
    episode_stats: Sequence[Mapping[str, Stats]],
    image_keys: Iterable[str],
    lengths: Sequence[int],
) -> None:
    """``meta/stats.json``: statistics over all frames (images: frame-weighted from the episodes')."""
    all_frames_stats = columns_stats(frames.columns())
    for key in image_keys:
        all_frames_stats[key] = aggregate_image_stats(
            [s[key] for s in episode_stats], lengths, len(frames.index)
        )
    (out / "meta" / "stats.json").write_text(json.dumps(stats_json(all_frames_stats), indent=4))


def _features(joint_names: Sequence[str], keys: Mapping[str, str], videos: Mapping[str, VideoWriter]) -> dict:
    """The ``features`` of ``info.json``: joints, one video per camera, then the index columns."""
    names = [f"{n}.pos" for n in joint_names]
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
    for name, dtype in _INDEX_FEATURES:
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    return features


def _info(
    settings: ExportSettings,
    episodes: Sequence[Episode],
    frames: Frames,
    task_list: Sequence[str],
    keys: Mapping[str, str],
    videos: Mapping[str, VideoWriter],
) -> dict:
    """The content of ``meta/info.json``."""
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": settings.robot_type,
        "total_episodes": len(episodes),
        "total_frames": len(frames.index),
        "total_tasks": len(task_list),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": round(settings.fps),
        "splits": {"train": f"0:{len(episodes)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if keys else None,
        "features": _features(settings.joint_names, keys, videos),
        "joint_units": settings.units,  # not a LeRobot field: which convention the joint values follow
        "source_bags": [Path(e.bag).name for e in episodes],
    }


def write_info(out: Path, info: Mapping[str, Any]) -> None:
    """``meta/info.json``."""
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=4))
