"""`make demo ARGS=--tiny`: the sim pipeline runs, prints its summary and leaves a complete report folder.

Real nodes, real MuJoCo, a real (tiny, random-weight) SmolVLA checkpoint. The tiny model is taken from the
session fixture through the demo's cache folder, so the test exercises the ``--tiny`` path without
generating it twice.
"""

from __future__ import annotations

import json

import cv2

from smolvla_bringup import demo
from smolvla_bringup.demo.model import GENERATED_VERSION, hub_checkpoint
from smolvla_common.joints import SO101_JOINTS


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

    rc = demo.main(["--tiny", "--duration", "4", "--report-dir", str(reports), "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    assert "UNTRAINED MODEL" in out and "summary" in out

    (report,) = reports.glob("demo-*")
    summary = json.loads((report / "summary.json").read_text())
    assert summary["untrained"] is True and summary["instruction"] == "pick up the red cube"
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
