"""The LeRobotDataset v3.0 folder: paths, parquet tables, info.json, stats.json (:func:`export_dataset`).

All episodes go into chunk 0, file 0: one data parquet, one episodes parquet and one mp4 per camera.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from smolvla_policy.dataset.episode import (
    Episode,
    discover_cameras,
    export_episode,
    make_converter,
    read_episode_metadata,
)
from smolvla_policy.dataset.settings import ExportSettings
from smolvla_policy.dataset.stats import Stats, aggregate_stats, episode_feature_stats, stats_json
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

    states: np.ndarray  # float32
    actions: np.ndarray  # float32
    timestamps: np.ndarray  # float64 k / fps (stored as float32; statistics use the float64 values)
    frame_index: np.ndarray
    episode_index: np.ndarray
    index: np.ndarray
    task_index: np.ndarray

    @classmethod
    def of(cls, episodes: Sequence[Episode], task_list: Sequence[str], fps: int) -> Frames:
        """Concatenate the episodes' states and actions and number their frames."""
        lengths = [len(e.states) for e in episodes]
        frame_index = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])
        return cls(
            states=np.concatenate([e.states for e in episodes]).astype(np.float32),
            actions=np.concatenate([e.actions for e in episodes]).astype(np.float32),
            timestamps=np.array([k / fps for k in frame_index.tolist()]),
            frame_index=frame_index,
            episode_index=np.concatenate([np.full(n, i, dtype=np.int64) for i, n in enumerate(lengths)]),
            index=np.arange(int(sum(lengths)), dtype=np.int64),
            task_index=np.array([task_list.index(t) for e in episodes for t in e.tasks], dtype=np.int64),
        )

    def columns(self, rows: slice = slice(None)) -> dict[str, np.ndarray]:
        """The non-image columns in feature order (``rows``: one episode's frames)."""
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

    ``settings.camera_topics`` None: every image topic of the bags (:func:`discover_cameras`). On any error
    what was written is removed again (a folder that existed empty before is kept, empty).
    """
    out = Path(out_dir)
    existed = out.exists()
    if existed and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"output folder {out} exists and is not empty; choose a new one")
    try:
        return _export(bag_paths, out, settings, log)
    except BaseException:
        _remove_output(out, keep_folder=existed)
        raise


def _remove_output(out: Path, keep_folder: bool) -> None:
    """Delete what the export wrote under ``out`` (``out`` itself too unless it existed before)."""
    if not keep_folder:
        shutil.rmtree(out, ignore_errors=True)
        return
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def dataset_fps(fps: float) -> int:
    """The whole frame rate LeRobot stores (``info.json`` ``fps`` is an int); other rates are refused."""
    if fps <= 0 or abs(fps - round(fps)) > 1e-9:
        raise ValueError(f"fps must be a positive whole number (LeRobot stores an int), got {fps}")
    return round(fps)


def _export(
    bag_paths: Sequence[str | Path], out: Path, settings: ExportSettings, log: Callable[[str], None]
) -> Path:
    """:func:`export_dataset` without the clean-up: check, read the bags, write every file."""
    if not bag_paths:
        raise ValueError("no bags given")
    fps = dataset_fps(settings.fps)
    converter = make_converter(settings)  # raises a clear error when range units lack a calibration
    if settings.camera_topics is None:
        settings = replace(settings, camera_topics=discover_cameras(bag_paths))
    settings = replace(settings, fps=fps)
    keys = {camera: f"observation.images.{camera}" for camera in settings.camera_topics}
    for camera, key in keys.items():
        log(f"camera {camera}: {settings.camera_topics[camera]} -> {key}")
    videos = _open_videos(out, keys, settings)
    episodes, skipped = _read_episodes(bag_paths, settings, converter, videos, log)
    if not episodes:
        raise ValueError(f"no episode exported (skipped as unsuccessful: {skipped})")
    task_list = _task_list(episodes)
    frames = Frames.of(episodes, task_list, fps)
    features = features_of(settings.joint_names, keys, videos)
    write_data(out, frames, features)
    (out / "meta").mkdir(parents=True, exist_ok=True)
    write_tasks(out, task_list)
    per_episode = write_episodes(out, episodes, frames, keys, fps)
    write_json(out / "meta" / "stats.json", stats_json(aggregate_stats(per_episode)))
    write_json(out / "meta" / "info.json", _info(settings, episodes, frames, task_list, features))
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
            if settings.only_successful and read_episode_metadata(path).get("success") is False:
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


def write_json(path: Path, content: Mapping[str, Any]) -> None:
    """A JSON file as LeRobot writes its metadata: 4-space indent, UTF-8 text kept as is."""
    path.write_text(json.dumps(content, indent=4, ensure_ascii=False), encoding="utf-8")


def _fixed_list(values: np.ndarray) -> Any:
    """A (T, J) array as a pyarrow fixed-size list column of float32."""
    import pyarrow as pa

    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _hf_features(features: Mapping[str, Mapping[str, Any]], rows: int) -> dict:
    """The ``datasets`` description of the data columns (the ``huggingface`` key of the parquet schema)."""
    described: dict[str, Any] = {}
    for name, feature in features.items():
        if feature["dtype"] == "video":
            continue
        value = {"dtype": feature["dtype"], "_type": "Value"}
        shape = list(feature["shape"])
        described[name] = value if shape == [1] else {"feature": value, "length": shape[0], "_type": "List"}
    # ``datasets`` keeps a 16-hex-digit fingerprint of how the table was made; here: of its features and rows.
    fingerprint = hashlib.sha256(json.dumps([described, rows]).encode()).hexdigest()[:16]
    return {"info": {"features": described}, "fingerprint": fingerprint}


def write_data(out: Path, frames: Frames, features: Mapping[str, Mapping[str, Any]]) -> None:
    """``data/chunk-000/file-000.parquet``: one row per frame, columns in feature order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {
        "action": _fixed_list(frames.actions),
        "observation.state": _fixed_list(frames.states),
        "timestamp": pa.array(frames.timestamps.astype(np.float32), pa.float32()),
        "frame_index": pa.array(frames.frame_index, pa.int64()),
        "episode_index": pa.array(frames.episode_index, pa.int64()),
        "index": pa.array(frames.index, pa.int64()),
        "task_index": pa.array(frames.task_index, pa.int64()),
    }
    data = pa.table({name: columns[name] for name in features if name in columns})
    hf_meta = json.dumps(_hf_features(features, len(frames.index)))
    data = data.replace_schema_metadata({b"huggingface": hf_meta.encode()})
    data_file = out / DATA_PATH.format(chunk_index=0, file_index=0)
    data_file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(data, data_file, compression="snappy", use_dictionary=True)


def _pandas_column(name: str | None, field_name: str | None, pandas_type: str, numpy_type: str) -> dict:
    """One column entry of the pandas schema metadata."""
    return {
        "name": name,
        "field_name": field_name,
        "pandas_type": pandas_type,
        "numpy_type": numpy_type,
        "metadata": None,
    }


# The pandas release whose ``to_parquet`` layout :func:`tasks_table` reproduces (the one LeRobot 0.4.4's
# reference environment has; pandas 3 stores text as large_string with numpy type "str").
PANDAS_LAYOUT_VERSION = "3.1.1"


def tasks_table(tasks: Sequence[str]) -> Any:
    """meta/tasks.parquet as pandas 3 writes ``DataFrame({"task_index": ...}, index=tasks)``, as LeRobot."""
    import pyarrow as pa

    table = pa.table(
        {
            "task_index": pa.array(range(len(tasks)), pa.int64()),
            "__index_level_0__": pa.array(list(tasks), pa.large_string()),
        }
    )
    column_index = {**_pandas_column(None, None, "unicode", "str"), "metadata": {"encoding": "UTF-8"}}
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [column_index],
        "columns": [
            _pandas_column("task_index", "task_index", "int64", "int64"),
            _pandas_column(None, "__index_level_0__", "object", "str"),
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": PANDAS_LAYOUT_VERSION,
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def write_tasks(out: Path, task_list: Sequence[str]) -> None:
    """``meta/tasks.parquet``."""
    import pyarrow.parquet as pq

    pq.write_table(tasks_table(task_list), out / "meta" / "tasks.parquet")


def _video_spans(episodes: Sequence[Episode], keys: Mapping[str, str], fps: int) -> list[dict[str, Any]]:
    """Per episode, where its frames lie in each camera's video (from = the previous episode's to)."""
    spans: list[dict[str, Any]] = [{} for _ in episodes]
    for key in keys.values():
        end = 0.0
        for span, episode in zip(spans, episodes, strict=True):
            start, end = end, end + len(episode.states) / fps
            span.update(
                {
                    f"videos/{key}/chunk_index": 0,
                    f"videos/{key}/file_index": 0,
                    f"videos/{key}/from_timestamp": start,
                    f"videos/{key}/to_timestamp": end,
                }
            )
    return spans


def _as_list(value: np.ndarray) -> list:
    """A statistic as LeRobot stores it: the array's nested lists, shape kept ((3, 1, 1) for images)."""
    return np.asarray(value).tolist()


def episode_row(
    i: int, episode: Episode, offset: int, video_span: Mapping[str, Any], stats: Mapping[str, Stats]
) -> dict[str, Any]:
    """One row of ``meta/episodes``, columns in LeRobot's order: indices, video spans, statistics."""
    n = len(episode.states)
    row: dict[str, Any] = {
        "episode_index": i,
        "tasks": sorted(set(episode.tasks), key=episode.tasks.index),
        "length": n,
        "data/chunk_index": 0,
        "data/file_index": 0,
        "dataset_from_index": offset,
        "dataset_to_index": offset + n,
        **video_span,
    }
    for feature, values in stats.items():
        row.update({f"stats/{feature}/{stat}": _as_list(value) for stat, value in values.items()})
    row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
    return row


def episode_stats(episode: Episode, frames: Frames, rows: slice, keys: Mapping[str, str]) -> dict[str, Stats]:
    """One episode's statistics in feature order: joints, images, then the index columns."""
    columns = frames.columns(rows)
    stats = {name: episode_feature_stats(columns[name]) for name in ("action", "observation.state")}
    stats.update({keys[camera]: s for camera, s in episode.image_stats.items()})
    stats.update({name: episode_feature_stats(v) for name, v in columns.items() if name not in stats})
    return stats


def write_episodes(
    out: Path, episodes: Sequence[Episode], frames: Frames, keys: Mapping[str, str], fps: int
) -> list[dict[str, Stats]]:
    """``meta/episodes/chunk-000/file-000.parquet``; returns each episode's statistics."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: dict[str, list] = {}
    offset = 0
    all_stats = []
    for i, (episode, span) in enumerate(zip(episodes, _video_spans(episodes, keys, fps), strict=True)):
        n = len(episode.states)
        stats = episode_stats(episode, frames, slice(offset, offset + n), keys)
        all_stats.append(stats)
        for key, value in episode_row(i, episode, offset, span, stats).items():
            rows.setdefault(key, []).append(value)
        offset += n
    episodes_file = out / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), episodes_file, compression="snappy", use_dictionary=True)
    return all_stats


def features_of(
    joint_names: Sequence[str], keys: Mapping[str, str], videos: Mapping[str, VideoWriter]
) -> dict[str, dict[str, Any]]:
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
    features: dict,
) -> dict:
    """The content of ``meta/info.json`` (LeRobot's fields only)."""
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": settings.robot_type,
        "total_episodes": len(episodes),
        "total_frames": len(frames.index),
        "total_tasks": len(task_list),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": int(settings.fps),
        "splits": {"train": f"0:{len(episodes)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if any(f["dtype"] == "video" for f in features.values()) else None,
        "features": features,
    }
