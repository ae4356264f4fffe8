"""Expert episodes recorded through the real graph: sim node -> DDS -> recorder, the expert as leader."""

from __future__ import annotations

import json

import pytest

from smolvla_bringup.demo.record_expert import main, parse_args
from so100_driver.sim.task import HELD_OUT_SEEDS_FROM


def test_an_expert_episode_is_recorded_as_a_successful_bag(tmp_path, capsys):
    out = tmp_path / "bags"
    argv = ["--episodes", "1", "--seed", "3", "--output-dir", str(out), "--cameras", "top"]
    assert main([*argv, "--size", "64", "--camera-fps", "5"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert lines[-1]["episodes"] == 1 and lines[-1]["success_rate"] == 1.0, lines
    episode = json.loads((out / "episode_0000" / "episode.json").read_text())
    assert episode["success"] is True and episode["task"] == "pick up the red cube"
    counts = episode["message_counts"]
    assert counts["/joint_commands"] > 120 and counts["/joint_states"] > 500, counts
    assert counts["/cameras/top/image_raw"] >= 30, counts


def test_held_out_seeds_are_refused_for_training_data(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--seed", str(HELD_OUT_SEEDS_FROM)])
    assert "held out" in capsys.readouterr().err
