"""Checks an exported dataset with LeRobot 0.4.4 itself; run with the reference environment's python.

    python lerobot_dataset_check.py REQUEST.json   (prints one JSON report line at the end)

REQUEST: ``export`` (the dataset folder), ``frames`` (an .npz with the frames the export holds:
``action``, ``observation.state`` (N, J) float32, ``image:<key>`` (N, H, W, 3) uint8, ``lengths``,
``tasks`` (one per episode)), ``work`` (a scratch folder), ``exceptions`` (field pattern -> reason: fields
allowed to differ), ``chunk`` (action chunk length) and optionally ``steps`` (the steps to run; default all).

Steps, each timed: (a) ``LeRobotDataset.create`` + ``add_frame`` + ``save_episode`` of the same frames, then
every field of both ``meta/`` folders and data files compared; (b) the export loaded with ``LeRobotDataset``
and every video frame it decodes compared with the given images (LeRobot's own dataset too, for scale);
(c) batches of action chunks (``delta_timestamps``) through a torch ``DataLoader``; (d) ``merge_datasets``
of the reference and the export; (e) one more episode recorded into a copy of the export, then reloaded.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")


def flatten(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    """Leaves of nested dicts / lists as ``prefix.key[i]`` -> scalar."""
    if isinstance(value, dict):
        if not value:
            out[prefix] = "{}"
        for key, item in value.items():
            flatten(item, f"{prefix}.{key}", out)
    elif isinstance(value, list | tuple):
        out[f"{prefix}#len"] = len(value)
        for i, item in enumerate(value):
            flatten(item, f"{prefix}[{i}]", out)
    else:
        out[prefix] = value
    return out


def parquet_leaves(path: Path, name: str) -> dict[str, Any]:
    """A parquet file's schema (names, types, key-value metadata) and every value, as leaves."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    leaves: dict[str, Any] = {f"{name}:columns": [f.name for f in table.schema]}
    leaves[f"{name}:columns"] = json.dumps(leaves[f"{name}:columns"])
    for field in table.schema:
        leaves[f"{name}:type:{field.name}"] = str(field.type)
    for key, raw in (table.schema.metadata or {}).items():
        flatten(json.loads(raw), f"{name}:metadata:{key.decode()}", leaves)
    for column, values in table.to_pydict().items():
        flatten(values, f"{name}:{column}", leaves)
    return leaves


def dataset_leaves(root: Path) -> dict[str, Any]:
    """Every field of a dataset folder: the meta/ files, the data files, and which videos exist."""
    leaves: dict[str, Any] = {}
    for path in sorted((root / "meta").rglob("*")):
        rel = str(path.relative_to(root))
        if path.suffix == ".json":
            flatten(json.loads(path.read_text()), rel, leaves)
        elif path.suffix == ".parquet":
            leaves.update(parquet_leaves(path, rel))
    leaves["files:meta"] = json.dumps(sorted(str(p.relative_to(root)) for p in (root / "meta").rglob("*.*")))
    for path in sorted((root / "data").rglob("*.parquet")):
        leaves.update(parquet_leaves(path, str(path.relative_to(root))))
    leaves["files:videos"] = json.dumps(
        sorted(str(p.relative_to(root)) for p in (root / "videos").rglob("*.mp4"))
    )
    return leaves


def compare(export: dict[str, Any], reference: dict[str, Any], exceptions: dict[str, str]) -> dict:
    """Fields that differ (value or Python type) and are not excused; counts of the excused ones."""
    differences, excused = [], {pattern: 0 for pattern in exceptions}
    for field in sorted(set(export) | set(reference)):
        a, b = export.get(field, "<missing>"), reference.get(field, "<missing>")
        if type(a) is type(b) and a == b:
            continue
        pattern = next((p for p in exceptions if fnmatch.fnmatchcase(field, p)), None)
        if pattern is None:
            differences.append({"field": field, "export": repr(a)[:200], "lerobot": repr(b)[:200]})
        else:
            excused[pattern] += 1
    return {
        "fields_compared": len(set(export) | set(reference)),
        "differences": differences,
        "excused": excused,
    }


def record(dataset: Any, frames: Any, episodes: list[int]) -> None:
    """``add_frame`` + ``save_episode`` of the given episodes' frames."""
    lengths = frames["lengths"].tolist()
    starts = np.cumsum([0, *lengths])
    image_keys = [k.split(":", 1)[1] for k in frames.files if k.startswith("image:")]
    for e in episodes:
        for i in range(starts[e], starts[e + 1]):
            frame = {"action": frames["action"][i], "observation.state": frames["observation.state"][i]}
            frame.update({key: frames[f"image:{key}"][i] for key in image_keys})
            dataset.add_frame({**frame, "task": str(frames["tasks"][e])})
        dataset.save_episode(parallel_encoding=False)
    dataset.finalize()


def make_reference(export: Path, frames: Any, root: Path) -> Path:
    """The same frames written by LeRobot's own recording path."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    info = json.loads((export / "meta" / "info.json").read_text())
    features = {  # as a recording passes them: shapes as tuples, no video info yet
        key: {**{k: v for k, v in feature.items() if k != "info"}, "shape": tuple(feature["shape"])}
        for key, feature in info["features"].items()
        if key not in INDEX_FEATURES
    }
    codecs = {"av1": "libsvtav1", "h264": "libx264"}
    video_info = [f["info"] for f in info["features"].values() if f["dtype"] == "video"]
    vcodec = codecs[video_info[0]["video.codec"]] if video_info else "libsvtav1"
    dataset = LeRobotDataset.create(
        "local/reference", info["fps"], features, root=root, robot_type=info["robot_type"], vcodec=vcodec
    )
    record(dataset, frames, list(range(len(frames["lengths"]))))
    return root


def check_fields(request: dict, frames: Any, work: Path) -> dict:
    """(a): every field of the export against LeRobot's own dataset of the same frames."""
    reference = make_reference(Path(request["export"]), frames, work / "reference")
    report = compare(
        dataset_leaves(Path(request["export"])), dataset_leaves(reference), request["exceptions"]
    )
    report["reference"] = str(reference)
    return report


def check_frames(root: str | Path, frames: Any) -> dict:
    """(b): a dataset through ``LeRobotDataset``: every frame's state, action and decoded images."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    dataset = LeRobotDataset(f"local/{Path(root).name}", root=root)
    errors: dict[str, list[float]] = {}
    exact = True
    for i in range(len(dataset)):
        item = dataset[i]
        exact &= bool(np.array_equal(item["action"].numpy(), frames["action"][i]))
        exact &= bool(np.array_equal(item["observation.state"].numpy(), frames["observation.state"][i]))
        for key in dataset.meta.video_keys:
            decoded = item[key].numpy().transpose(1, 2, 0) * 255.0
            diff = np.abs(decoded - frames[f"image:{key}"][i].astype(np.float64))
            errors.setdefault(key, []).extend([float(diff.max()), float(diff.mean())])
    return {
        "frames": len(dataset),
        "episodes": dataset.meta.total_episodes,
        "video_backend": dataset.video_backend,
        "state_action_exact": exact,
        "max_pixel_error": {k: max(v[0::2]) for k, v in errors.items()},
        "mean_pixel_error": {k: float(np.mean(v[1::2])) for k, v in errors.items()},
    }


def check_chunks(request: dict, frames: Any) -> dict:
    """(c): SmolVLA's action chunks (``delta_timestamps``) batched by a torch ``DataLoader``."""
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    chunk = int(request["chunk"])
    fps = json.loads((Path(request["export"]) / "meta" / "info.json").read_text())["fps"]
    dataset = LeRobotDataset(
        "local/export", root=request["export"], delta_timestamps={"action": [i / fps for i in range(chunk)]}
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=False, num_workers=0)
    shapes, ok, batches = set(), True, 0
    ends = np.cumsum(frames["lengths"])
    for batch in loader:
        shapes.add(tuple(batch["action"].shape[1:]))
        for b, index in enumerate(batch["index"].tolist()):
            end = int(ends[np.searchsorted(ends, index, side="right")])
            valid = min(chunk, end - index)
            want = frames["action"][index : index + valid]
            ok &= bool(np.array_equal(batch["action"][b, :valid].numpy(), want))
            ok &= batch["action_is_pad"][b].tolist() == [False] * valid + [True] * (chunk - valid)
        batches += 1
    return {"batches": batches, "action_shapes": sorted(shapes), "chunks_match": ok}


def check_merge(request: dict, frames: Any, work: Path) -> dict:
    """(d): ``merge_datasets`` of LeRobot's dataset and the export, then the merged one loaded."""
    from lerobot.datasets.dataset_tools import merge_datasets
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    parts = [
        LeRobotDataset("local/reference", root=work / "reference"),
        LeRobotDataset("local/export", root=request["export"]),
    ]
    merged = merge_datasets(parts, "local/merged", output_dir=work / "merged")
    merged = LeRobotDataset("local/merged", root=work / "merged")
    last = merged[len(merged) - 1]
    n = len(frames["action"])
    return {
        "frames": len(merged),
        "episodes": merged.meta.total_episodes,
        "last_action_matches": bool(np.array_equal(last["action"].numpy(), frames["action"][n - 1])),
        "stats_count": merged.meta.stats["action"]["count"].tolist(),
    }


def check_resume(request: dict, frames: Any, work: Path) -> dict:
    """(e): one more episode recorded into a copy of the export, then the copy reloaded and read."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = work / "resumed"
    shutil.copytree(request["export"], root)
    dataset = LeRobotDataset("local/resumed", root=root)
    before = len(dataset)
    record(dataset, frames, [0])
    reloaded = LeRobotDataset("local/resumed", root=root)
    first = reloaded[before]
    image_keys = reloaded.meta.video_keys
    error = max(
        float(np.abs(first[k].numpy().transpose(1, 2, 0) * 255 - frames[f"image:{k}"][0]).max())
        for k in image_keys
    )
    return {
        "frames_before": before,
        "frames_after": len(reloaded),
        "episodes_after": reloaded.meta.total_episodes,
        "new_episode_first_action_matches": bool(
            np.array_equal(first["action"].numpy(), frames["action"][0])
        ),
        "new_episode_max_pixel_error": error,
        "last_item_loads": reloaded[len(reloaded) - 1]["index"].item() == len(reloaded) - 1,
    }


def image_stats(request: dict, work: Path) -> dict:
    """LeRobot's ``compute_episode_stats`` of the frames in ``request["image_stats_frames"]`` (N, H, W, 3)."""
    from lerobot.datasets.compute_stats import compute_episode_stats
    from PIL import Image

    images = np.load(request["image_stats_frames"])["frames"]
    folder = work / "image_stats"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(str(folder / f"frame-{i:06d}.png"))
        Image.fromarray(image).save(paths[-1])
    stats = compute_episode_stats({"camera": paths}, {"camera": {"dtype": "video"}})["camera"]
    return {name: value.tolist() for name, value in stats.items()}


def main(request_path: str) -> None:
    request = json.loads(Path(request_path).read_text())
    work = Path(request["work"])
    frames = np.load(request["frames"])
    report: dict[str, Any] = {}
    steps = (
        ("fields", lambda: check_fields(request, frames, work)),
        ("load", lambda: check_frames(request["export"], frames)),
        ("load_reference", lambda: check_frames(work / "reference", frames)),  # LeRobot's own encoding
        ("chunks", lambda: check_chunks(request, frames)),
        ("merge", lambda: check_merge(request, frames, work)),
        ("resume", lambda: check_resume(request, frames, work)),
        ("image_stats", lambda: image_stats(request, work)),
    )
    for name, step in steps:
        if name not in request.get("steps", [name]):
            continue
        start = time.perf_counter()
        report[name] = step()
        report[name]["seconds"] = round(time.perf_counter() - start, 2)
    import lerobot

    report["lerobot"] = lerobot.__version__
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
