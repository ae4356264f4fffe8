"""Bag -> LeRobotDataset v3.0 export, read back by an independent reader (pyarrow + PyAV, published layout).

The bags are the project's synthetic recordings, so the expected frames, states, actions and tasks are
computed here from the analytic trajectory and the image generator. Videos use the lossless ``libx264rgb`` /
``crf 0`` setting so frames must come back bit-exact; the default AV1 output is checked to decode close.
When LeRobot 0.4.4's reference environment (``.venv-lerobot``, from ``scripts/setup_lerobot_reference.sh``)
exists, LeRobot itself loads the export too (its video decoding needs torchcodec, which that env lacks).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import synthetic_bags
from smolvla_policy.dataset import ExportSettings, export_dataset, main

CAMERAS = {"top": "/cameras/top/image_raw", "wrist": "/cameras/wrist/image_raw"}
RANGE_MIN, RANGE_MAX = 1000, 3000  # every joint's range in the `calibration_file` fixture
FPS = 30
REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    root = tmp_path_factory.mktemp("recordings")
    return [
        synthetic_bags.write_synthetic_bag(root / "ep0", "mcap", duration_s=2.0, task="pick up the cube"),
        synthetic_bags.write_synthetic_bag(
            root / "ep1", "sqlite3", duration_s=1.0, task="put the cube in the box"
        ),
    ]


def lerobot_units(rad: np.ndarray, units: str) -> np.ndarray:
    """LeRobot's units by hand: raw = rad * 4095 / 2pi + mid; degrees, or -100..100; gripper 0..100."""
    mid = (RANGE_MIN + RANGE_MAX) / 2
    raw = rad * 4095 / (2 * math.pi) + mid
    if units == "degrees":
        out = (raw - mid) * 360 / 4095
    else:
        out = 200 * (np.clip(raw, RANGE_MIN, RANGE_MAX) - RANGE_MIN) / (RANGE_MAX - RANGE_MIN) - 100
    out[..., 5] = 100 * (np.clip(raw[..., 5], RANGE_MIN, RANGE_MAX) - RANGE_MIN) / (RANGE_MAX - RANGE_MIN)
    return out


def decode_video(path: Path) -> tuple[list[np.ndarray], list[float]]:
    import av

    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * stream.time_base))
    return frames, times


def read_dataset(root: Path) -> dict:
    """An independent reader of the v3.0 layout: info.json path templates, parquet tables, mp4 per camera."""
    import pyarrow.parquet as pq

    info = json.loads((root / "meta" / "info.json").read_text())
    data = pq.read_table(root / info["data_path"].format(chunk_index=0, file_index=0)).to_pydict()
    episodes = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    tasks_table = pq.read_table(root / "meta" / "tasks.parquet").to_pydict()
    tasks = dict(zip(tasks_table["task_index"], tasks_table["__index_level_0__"], strict=True))
    videos = {
        key: decode_video(root / info["video_path"].format(video_key=key, chunk_index=0, file_index=0))
        for key, feature in info["features"].items()
        if feature["dtype"] == "video"
    }
    stats = json.loads((root / "meta" / "stats.json").read_text())
    return {
        "info": info,
        "data": data,
        "episodes": episodes,
        "tasks": tasks,
        "videos": videos,
        "stats": stats,
    }


@pytest.mark.parametrize("units", ["degrees", "range"])
def test_export_reads_back_with_the_same_frames_states_actions_and_tasks(
    recordings, calibration_file, tmp_path, units
):
    out = export_dataset(
        recordings,
        tmp_path / "dataset",
        ExportSettings(
            dict(CAMERAS),
            fps=FPS,
            units=units,
            calibration_file=str(calibration_file),
            vcodec="libx264rgb",
            crf=0,
        ),
    )
    ds = read_dataset(out)
    info = ds["info"]
    assert info["codebase_version"] == "v3.0" and info["fps"] == FPS
    assert info["total_episodes"] == 2 and info["total_frames"] == 90 and info["total_tasks"] == 2
    assert info["splits"] == {"train": "0:2"}
    assert info["features"]["observation.state"]["names"][0] == "shoulder_pan.pos"
    assert info["features"]["observation.images.top"]["shape"] == [48, 64, 3]
    assert ds["tasks"] == {0: "pick up the cube", 1: "put the cube in the box"}

    data = ds["data"]
    episode_lengths = [60, 30]
    assert data["index"] == list(range(90))
    assert data["episode_index"] == [0] * 60 + [1] * 30
    assert data["frame_index"] == list(range(60)) + list(range(30))
    assert data["task_index"] == [0] * 60 + [1] * 30
    frame_times = np.concatenate([np.arange(n) / FPS for n in episode_lengths])
    assert np.allclose(data["timestamp"], frame_times, atol=1e-6)
    # Frame k at t = k / fps: state = the arm (following the command 1/30 s late), action = the command at t.
    expected_state = lerobot_units(synthetic_bags.synthetic_command(frame_times - 1 / 30), units)
    expected_action = lerobot_units(synthetic_bags.synthetic_command(frame_times), units)
    assert np.allclose(data["observation.state"], expected_state, atol=1e-4)
    assert np.allclose(data["action"], expected_action, atol=1e-4)
    if units == "range":
        assert np.abs(np.array(data["observation.state"])[:, :5]).max() <= 100

    for index, (camera, key) in enumerate((c, f"observation.images.{c}") for c in CAMERAS):
        frames, times = ds["videos"][key]
        assert len(frames) == 90
        for row, episode in enumerate(ds["episodes"]):
            start = episode[f"videos/{key}/from_timestamp"]
            for k in range(episode["length"]):
                ts = start + k / FPS  # where LeRobot looks for frame k of this episode
                decoded = frames[round(ts * FPS)]
                assert times[round(ts * FPS)] == pytest.approx(ts, abs=1e-6)
                # The camera runs at 15 fps: frame k shows the newest image at or before k / 30.
                expected = synthetic_bags.synthetic_image(math.floor(k / FPS * 15 + 1e-6) / 15, index)
                assert np.array_equal(decoded, expected), (camera, row, k)

    episodes = ds["episodes"]
    assert [e["length"] for e in episodes] == episode_lengths
    assert [e["dataset_from_index"] for e in episodes] == [0, 60]
    assert [e["dataset_to_index"] for e in episodes] == [60, 90]
    assert [e["tasks"] for e in episodes] == [["pick up the cube"], ["put the cube in the box"]]
    assert episodes[1]["videos/observation.images.top/from_timestamp"] == pytest.approx(2.0)
    stats = ds["stats"]
    assert np.allclose(
        stats["observation.state"]["mean"], np.mean(data["observation.state"], axis=0), atol=1e-4
    )
    assert np.allclose(stats["action"]["max"], np.max(data["action"], axis=0), atol=1e-4)
    assert np.array(stats["observation.images.top"]["mean"]).shape == (3, 1, 1)
    assert stats["action"]["count"] == [90]

    if units == "degrees":
        check_with_lerobot(out)


def check_with_lerobot(root: Path) -> None:
    python = Path(os.environ.get("LEROBOT_PYTHON", REPO_ROOT / ".venv-lerobot" / "bin" / "python"))
    if not python.exists():
        return  # LeRobot's reference environment is optional (scripts/setup_lerobot_reference.sh)
    script = """
import sys, json
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset("local/export", root=sys.argv[1])
row = ds.hf_dataset[65]
print(json.dumps({"len": len(ds), "episodes": ds.meta.total_episodes, "tasks": list(ds.meta.tasks.index),
                  "state": row["observation.state"].tolist(), "episode": int(row["episode_index"]),
                  "video_keys": ds.meta.video_keys, "fps": ds.fps}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(root.parent / "lerobot_home")}
    result = subprocess.run(
        [str(python), "-c", script, str(root)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["len"] == 90 and loaded["episodes"] == 2 and loaded["fps"] == FPS
    assert loaded["tasks"] == ["pick up the cube", "put the cube in the box"]
    assert loaded["episode"] == 1
    assert np.allclose(
        loaded["state"],
        lerobot_units(synthetic_bags.synthetic_command(np.array([5 / FPS - 1 / 30])), "degrees")[0],
        atol=1e-4,
    )
    assert loaded["video_keys"] == ["observation.images.top", "observation.images.wrist"]


def test_default_av1_export_decodes_close_to_the_recording(recordings, calibration_file, tmp_path, capsys):
    out = tmp_path / "av1"
    assert (
        main(
            [
                str(recordings[1]),
                "--out",
                str(out),
                "--calibration",
                str(calibration_file),
                "--cameras",
                "top",
            ]
        )
        == 0
    )
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["features"]["observation.images.top"]["info"]["video.codec"] == "av1"
    frames, _ = decode_video(out / "videos" / "observation.images.top" / "chunk-000" / "file-000.mp4")
    assert len(frames) == 30
    error = np.mean(
        [
            np.abs(f.astype(int) - synthetic_bags.synthetic_image(math.floor(k / 2) / 15, 0)).mean()
            for k, f in enumerate(frames)
        ]
    )
    assert error < 12  # lossy codec (crf 30 on a 64x48 test pattern), but the right frames
    assert "wrote" in capsys.readouterr().err


def test_export_errors_are_clear(recordings, calibration_file, tmp_path, capsys):
    settings = ExportSettings(dict(CAMERAS), units="range")
    with pytest.raises(ValueError, match="calibration"):
        export_dataset(recordings[:1], tmp_path / "a", settings)
    calibration = ["--calibration", str(calibration_file)]
    assert (
        main([str(recordings[0]), "--out", str(tmp_path / "b"), "--cameras", "top,side", *calibration]) == 2
    )
    assert "topic /cameras/side/image_raw is missing" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()  # nothing half-written is left behind
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        export_dataset(recordings[:1], tmp_path / "c", ExportSettings(dict(CAMERAS)))
