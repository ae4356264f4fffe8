"""Recovery data: the expert takes over a stuck policy through the real graph, and only the takeover is
recorded (sim node -> DDS -> recorder; the policy and executor nodes run the untrained tiny model)."""

from __future__ import annotations

import json

import pytest

from smolvla_bringup.demo.record_takeovers import StuckDetector, main, parse_args
from so100_driver.sim.expert import CLOSED, OPEN, ExpertTiming
from so100_driver.sim.task import HELD_OUT_SEEDS_FROM

TAKEOVER_TICKS = 30 * sum(
    getattr(ExpertTiming(), phase) for phase in ("approach", "descend", "close", "lift", "hold")
)


def test_stuck_means_closed_on_nothing_for_a_while_or_out_of_time():
    detector = StuckDetector(closed_for=2.0, stuck_after=10.0)
    assert detector.why(0.0, OPEN, 0.0) == ""
    assert detector.why(3.0, CLOSED, 0.0) == ""  # just closed
    assert detector.why(4.9, CLOSED, 0.005) == ""
    assert "closed 2 s" in detector.why(5.0, CLOSED, 0.005)
    detector.reset()
    assert detector.why(3.0, CLOSED, 0.0) == ""
    assert detector.why(6.0, CLOSED, 0.02) == ""  # closed and lifting: a grasp, not stuck
    assert detector.why(7.0, OPEN, 0.0) == ""  # opened again: the clock restarts
    assert detector.why(8.5, CLOSED, 0.0) == ""
    assert "no success after 10 s" in detector.why(10.0, CLOSED, 0.0)


def test_a_stuck_policy_is_taken_over_and_only_the_takeover_is_recorded(
    tiny_checkpoint_factory, tmp_path, capsys
):
    checkpoint = tiny_checkpoint_factory(image_shape=(3, 48, 64))
    out = tmp_path / "takeovers"
    argv = ["--checkpoint", str(checkpoint), "--episodes", "1", "--output-dir", str(out)]
    assert main([*argv, "--size", "64", "--stuck-after", "1.5"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    (episode, summary) = lines
    assert episode["policy_success"] is False and "no success after 1.5 s" in episode["why"], episode
    assert summary["takeovers"] == 1 and summary["takeover_successes"] == 1, summary
    recorded = json.loads((out / "episode_0000" / "episode.json").read_text())
    assert recorded["success"] is True and recorded["task"] == "pick up the red cube"
    counts = recorded["message_counts"]
    # the expert's commands only, one per tick of its plan: the stopped executor commands nothing more
    assert 0.8 * TAKEOVER_TICKS < counts["/joint_commands"] <= TAKEOVER_TICKS + 5, counts
    assert counts["/cameras/wrist/image_raw"] >= 30 and counts["/joint_states"] > 300, counts


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", str(HELD_OUT_SEEDS_FROM)], "training seeds"),
        (["--closed-for", "0"], "--closed-for"),
    ],
)
def test_bad_command_lines_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--checkpoint", "x", *argv])
    assert message in capsys.readouterr().err
