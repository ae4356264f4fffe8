"""Bag -> LeRobotDataset v3.0 export, read back by an independent reader (pyarrow + PyAV, published layout).

The bags are the project's synthetic recordings, so the expected frames, states, actions and tasks are
computed here from the analytic trajectory and the image generator. Videos use the lossless ``libx264rgb`` /
``crf 0`` setting so frames must come back bit-exact; the default AV1 output is checked to decode close.
When LeRobot 0.4.4's reference environment (``.venv-lerobot``, from ``scripts/setup_lerobot_reference.sh``;
``LEROBOT_PYTHON`` names another) exists, ``test_support/lerobot_dataset_check.py`` runs LeRobot's own code on
the export there: field-by-field comparison with LeRobot's recording of the same frames, loading and video
decoding, action chunks, ``merge_datasets`` and resumed recording; otherwise that test is skipped, saying why.
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
from smolvla_common.bags import BagError
from smolvla_policy.dataset import ExportSettings, episode_image_stats, export_dataset, main
from smolvla_policy.dataset.stats import downsample, sampled_frame_indices

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


def expected_images(lengths: list[int]) -> dict[str, np.ndarray]:
    """The frames the export holds per image key: frame k shows the 15 fps camera's newest image at k / 30."""
    return {
        f"observation.images.{camera}": np.stack(
            [synthetic_bags.synthetic_image(math.floor(k / 2) / 15, index) for n in lengths for k in range(n)]
        )
        for index, camera in enumerate(CAMERAS)
    }


def test_default_export_has_every_camera_and_says_what_it_exported(
    recordings, calibration_file, tmp_path, capsys
):
    out = tmp_path / "av1"
    assert main([str(recordings[1]), "--out", str(out), "--calibration", str(calibration_file)]) == 0
    info = json.loads((out / "meta" / "info.json").read_text())
    keys = [k for k, f in info["features"].items() if f["dtype"] == "video"]
    assert keys == ["observation.images.top", "observation.images.wrist"]  # no camera silently dropped
    assert info["features"]["observation.images.top"]["info"]["video.codec"] == "av1"
    err = capsys.readouterr().err
    assert "camera top: /cameras/top/image_raw -> observation.images.top" in err
    assert "camera wrist: /cameras/wrist/image_raw -> observation.images.wrist" in err
    assert "1 episodes, 30 frames at 30 fps, 1 tasks, 2 cameras" in err
    for key, images in expected_images([30]).items():
        frames, _ = decode_video(out / "videos" / key / "chunk-000" / "file-000.mp4")
        assert len(frames) == 30
        error = np.mean([np.abs(f.astype(int) - images[k]).mean() for k, f in enumerate(frames)])
        assert error < 12  # lossy codec (crf 30 on a 64x48 test pattern), but the right frames


def test_statistics_have_lerobots_shapes_and_image_quantiles(recordings, calibration_file, tmp_path):
    import pyarrow.parquet as pq

    settings = ExportSettings(calibration_file=str(calibration_file), vcodec="libx264rgb", crf=0)
    out = export_dataset(recordings, tmp_path / "ds", settings)
    episodes = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    # Image statistics are (3, 1, 1) arrays as LeRobot writes them, not 3 flat numbers.
    assert (
        str(episodes.schema.field("stats/observation.images.top/mean").type)
        == "list<element: list<element: list<element: double>>>"
    )
    assert str(episodes.schema.field("stats/frame_index/min").type) == "list<element: int64>"
    row = episodes.to_pylist()[1]
    images = expected_images([60, 30])["observation.images.top"][60:] / 255.0
    assert row["stats/observation.images.top/count"] == [30]  # episodes under 100 frames: every frame sampled
    mean = np.array(row["stats/observation.images.top/mean"])
    assert mean.shape == (3, 1, 1) and np.allclose(mean[:, 0, 0], images.mean(axis=(0, 1, 2)))
    assert np.allclose(np.array(row["stats/observation.images.top/std"])[:, 0, 0], images.std(axis=(0, 1, 2)))
    # Quantiles come from a 5000-bin histogram: within one bin of the exact ones, and not the mean.
    for name, q in (("q01", 0.01), ("q50", 0.5), ("q99", 0.99)):
        value = np.array(row[f"stats/observation.images.top/{name}"])[:, 0, 0]
        assert np.allclose(value, np.quantile(images.reshape(-1, 3), q, axis=0), atol=1 / 5000 + 1e-6)
    # Joint quantiles: per episode from the same histogram (30 frames: not np.quantile's interpolation).
    state = np.array(
        [row[f"stats/observation.state/{n}"] for n in ("min", "q01", "q10", "q50", "q90", "q99", "max")]
    )
    assert (np.diff(state, axis=0) >= 0).all()
    stats = json.loads((out / "meta" / "stats.json").read_text())
    # Dataset quantiles are the frame-weighted mean of the episodes' (LeRobot's aggregation).
    first = episodes.to_pylist()[0]
    weighted = (60 * np.array(first["stats/action/q10"]) + 30 * np.array(row["stats/action/q10"])) / 90
    assert np.allclose(stats["action"]["q10"], weighted)
    assert stats["observation.images.wrist"]["count"] == [90] and stats["index"]["min"] == [0]


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
    (tmp_path / "empty").mkdir()
    side = ExportSettings({"side": "/cameras/side/image_raw"}, calibration_file=str(calibration_file))
    with pytest.raises(BagError):
        export_dataset(recordings[:1], tmp_path / "empty", side)
    # A folder that existed (empty) before is the user's: emptied again, not deleted.
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
    with pytest.raises(ValueError, match="whole number"):
        export_dataset(recordings[:1], tmp_path / "d", ExportSettings(fps=29.97))


def test_joint_units_export_an_arm_without_calibration_like_the_policy_node_reads_it(
    recordings, tmp_path, capsys
):
    """The simulated arm has no calibration: --joint-units deg x6 (sim.yaml's joint_units) exports it."""
    out = tmp_path / "sim"
    degrees = ["--units", "degrees", "--joint-units", "deg,deg,deg,deg,deg,deg", "--vcodec", "libx264rgb"]
    assert main([str(recordings[1]), "--out", str(out), *degrees]) == 0
    assert "units deg,deg,deg,deg,deg,deg" in capsys.readouterr().err
    data = read_dataset(out)["data"]
    frame_times = np.arange(30) / FPS
    expected = np.degrees(synthetic_bags.synthetic_command(frame_times))  # the gripper in degrees too
    assert np.allclose(data["action"], expected, atol=1e-3)
    assert main([str(recordings[1]), "--out", str(tmp_path / "x"), "--joint-units", "deg,deg"]) == 2
    assert "got 2 joint units for 6 joints" in capsys.readouterr().err
    assert main([str(recordings[1]), "--out", str(tmp_path / "y")]) == 2  # degrees, no calibration
    assert "--joint-units" in capsys.readouterr().err


# Fields allowed to differ between the export and LeRobot's own dataset of the same frames, and why.
LEROBOT_EXCEPTIONS = {
    # Written by pandas in LeRobot's environment: that environment's pyarrow and pandas versions.
    "meta/tasks.parquet:metadata:pandas.creator.version": "pyarrow version of the writing environment",
    # datasets' fingerprint of how LeRobot's table was built (a cache hash; the export writes its own).
    "data/*:metadata:huggingface.fingerprint": "datasets cache hash",
    # LeRobot 0.4.4 squares uint8 pixels without widening them (wraps modulo 256): its image std is wrong.
    "meta/episodes/*:stats/observation.images.*/std*": "true image std (LeRobot's uint8 square overflows)",
    "meta/stats.json.observation.images.*.std*": "true image std (LeRobot's uint8 square overflows)",
}


def lerobot_python() -> Path:
    python = Path(os.environ.get("LEROBOT_PYTHON", REPO_ROOT / ".venv-lerobot" / "bin" / "python"))
    if not python.exists():
        pytest.skip(
            f"LeRobot 0.4.4 reference environment not found at {python} (scripts/setup_lerobot_reference.sh)"
        )
    return python


def test_export_matches_what_lerobot_writes_and_works_with_lerobots_tools(
    recordings, calibration_file, tmp_path
):
    """(a) field by field vs LeRobot's own recording of the same frames, (b) LeRobot loads and decodes it,
    (c) SmolVLA action chunks through a DataLoader, (d) merge_datasets, (e) resuming recording into it."""
    import pyarrow.parquet as pq

    python = lerobot_python()
    out = export_dataset(
        recordings, tmp_path / "export", ExportSettings(calibration_file=str(calibration_file))
    )
    data = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet").to_pydict()
    frames = {
        "action": np.array(data["action"], dtype=np.float32),
        "observation.state": np.array(data["observation.state"], dtype=np.float32),
        "lengths": np.array([60, 30]),
        "tasks": np.array(["pick up the cube", "put the cube in the box"]),
        **{f"image:{key}": images for key, images in expected_images([60, 30]).items()},
    }
    np.savez(tmp_path / "frames.npz", **frames)
    request = {
        "export": str(out),
        "frames": str(tmp_path / "frames.npz"),
        "work": str(tmp_path / "work"),
        "exceptions": LEROBOT_EXCEPTIONS,
        "chunk": 50,  # SmolVLA's chunk_size
        "image_stats_frames": str(tmp_path / "large.npz"),
    }
    # A longer episode of larger images: 100 of 150 frames sampled, every 2nd pixel of 320x240 taken.
    large = np.random.default_rng(0).integers(0, 256, (150, 240, 320, 3), dtype=np.uint8)
    np.savez(tmp_path / "large.npz", frames=large)
    (tmp_path / "request.json").write_text(json.dumps(request))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(tmp_path / "lerobot_home")}
    script = REPO_ROOT / "test_support" / "lerobot_dataset_check.py"
    result = subprocess.run(
        [str(python), str(script), str(tmp_path / "request.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=1))  # the figures (-s shows them)

    fields = report["fields"]
    assert fields["differences"] == [], fields["differences"][:20]
    assert fields["fields_compared"] > 1000
    assert all(count > 0 for pattern, count in fields["excused"].items() if "std" in pattern)

    load = report["load"]
    assert load["frames"] == 90 and load["episodes"] == 2 and load["state_action_exact"]
    # AV1 (crf 30) on a 64x48 synthetic pattern with sharp white bars: the mean error is what tells the
    # frames are the right ones (a wrong frame moves the bar: mean error > 15); the max is at the bar's edges.
    # Measured: mean 1.23 / 1.39, max 95 / 93 (top / wrist); LeRobot's own encoding of the same frames:
    # mean 1.23 / 1.39, max 99 / 94.
    assert max(load["mean_pixel_error"].values()) < 3
    assert max(load["max_pixel_error"].values()) < 128
    reference = report["load_reference"]
    for key, error in load["mean_pixel_error"].items():
        assert error < reference["mean_pixel_error"][key] + 0.5

    chunks = report["chunks"]
    assert chunks["action_shapes"] == [[50, 6]] and chunks["chunks_match"] and chunks["batches"] == 12

    merge = report["merge"]
    assert merge["frames"] == 180 and merge["episodes"] == 4 and merge["last_action_matches"]
    assert merge["stats_count"] == [180]

    ours = episode_image_stats([downsample(large[i]) for i in sampled_frame_indices(len(large))])
    for name, value in report["image_stats"].items():
        if name not in ("std", "seconds"):  # std: see LEROBOT_EXCEPTIONS
            assert np.asarray(ours[name]).tolist() == value, name
    assert ours["count"].tolist() == [100]

    resume = report["resume"]
    assert resume["frames_before"] == 90 and resume["frames_after"] == 150 and resume["episodes_after"] == 3
    assert resume["new_episode_first_action_matches"] and resume["last_item_loads"]
    assert resume["new_episode_max_pixel_error"] < 128
