"""`make demo ARGS=--tiny`: the sim pipeline makes attempts at the task, prints its summary and leaves a
complete report folder; a success's frames are its picture; the trained checkpoint is the default.

Real nodes, real MuJoCo, a real (tiny, random-weight) SmolVLA checkpoint. The tiny model is taken from the
session fixture through the demo's cache folder, so the test exercises the ``--tiny`` path without
generating it twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from smolvla_bringup import demo
from smolvla_bringup.demo.closed_loop import EpisodeResult
from smolvla_bringup.demo.model import GENERATED_VERSION, choose_model, hub_checkpoint, shipped_checkpoint
from smolvla_common.joints import SO101_JOINTS

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_hub_check_is_quick_and_explains_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    repo, why = hub_checkpoint("lerobot/smolvla_base")
    assert repo is None
    assert "offline" in why


def test_tiny_demo_writes_its_report(demo_checkpoint, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "xdg"
    (cache / "smolvla_ros").mkdir(parents=True)
    (cache / "smolvla_ros" / f"demo-tiny-{GENERATED_VERSION}").symlink_to(demo_checkpoint)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    reports = tmp_path / "reports"

    rc = demo.main(["--tiny", "--duration", "9", "--attempt-timeout", "5", "--report-dir", str(reports)])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    assert "UNTRAINED MODEL" in out and "summary" in out

    (report,) = reports.glob("demo-*")
    summary = json.loads((report / "summary.json").read_text())
    assert summary["untrained"] is True and summary["instruction"] == "pick up the red cube"
    (attempt,) = summary["attempts"]  # 9 s: one attempt (2 s homing + 5 s), too little time for a second
    assert attempt["episode"] == 2 and attempt["placement"].startswith("x=")  # the first held-out placement
    assert summary["successes"] == 0 and attempt["success"] is False  # random weights
    assert "0 of 1 attempts succeeded" in out
    assert summary["chunks_published"] > 0 and summary["chunks_received"] > 0
    assert summary["executed_steps"] > 0
    latency = summary["inference_latency_s"]
    assert 0 < latency["min"] <= latency["median"] <= latency["max"]
    assert set(summary["joint_motion_range_rad"]) == set(SO101_JOINTS)
    assert max(summary["joint_motion_range_rad"].values()) > 0.01, "the simulated arm did not move"

    plot = cv2.imread(str(report / summary["plot"]))
    assert plot is not None and plot.shape[0] > 300 and plot.shape[1] > 300
    assert {f"camera_{c}_{w}.png" for c in ("top", "wrist") for w in ("start", "end")} <= set(
        summary["frames"]
    )
    for name in summary["frames"]:
        frame = cv2.imread(str(report / name))
        assert frame is not None and frame.shape == (256, 256, 3)
        assert frame.std() > 5, f"{name} is blank"
    assert "checkpoint:" in (report / "params.yaml").read_text()


def test_the_trained_checkpoint_is_the_default_when_run_from_the_repository(tmp_path, monkeypatch):
    args = demo.run.parse_args([])
    monkeypatch.chdir(REPO_ROOT)
    model = choose_model(args)
    assert Path(model.checkpoint) == REPO_ROOT / "checkpoints" / "sim-pick-cube"
    assert not model.untrained and not model.real_size  # float32 and async on a CPU: it is small
    monkeypatch.chdir(tmp_path)  # elsewhere: no trained checkpoint, the hub or the random model
    assert shipped_checkpoint() is None


def test_a_success_keeps_its_camera_frames_as_its_picture(tmp_path):
    frames = {"front": np.full((128, 128, 3), 200, np.uint8), "wrist": np.zeros((128, 128, 3), np.uint8)}
    won = EpisodeResult(2, "x=0.2 y=0.0 yaw=0.0", True, 7.5, closest_approach_m=0.02, highest_lift_m=0.04)
    entry = demo.run.record_attempt(won, frames, tmp_path, 3)
    assert entry["attempt"] == 3 and entry["success"] and entry["time_to_success_s"] == 7.5
    assert entry["frames"] == ["camera_front_success_3.png", "camera_wrist_success_3.png"]
    assert cv2.imread(str(tmp_path / entry["frames"][0]))[0, 0].tolist() == [200, 200, 200]
    picture = cv2.imread(str(tmp_path / entry["picture"]))  # both cameras side by side, scaled up
    assert entry["picture"] == "success_3.png" and picture.shape == (384, 768, 3)
    assert picture[0, 0].tolist() == [200, 200, 200] and picture[0, -1].tolist() == [0, 0, 0]
    lost = EpisodeResult(3, "x=0.2 y=0.0 yaw=0.0", False, None)
    assert "frames" not in demo.run.record_attempt(lost, frames, tmp_path, 4)
