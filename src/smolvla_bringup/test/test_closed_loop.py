"""The closed-loop scorer through the real graph: the expert succeeds, an untrained policy does not.

The expert row proves the scorer sees a success (and times it); the untrained tiny checkpoint proves a
policy cannot pass by accident (a short timeout, the arm moves without purpose). Small cameras keep both
cheap.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from smolvla_bringup.demo import learning_curve
from smolvla_bringup.demo.closed_loop import (
    Options,
    RowSpec,
    graph_parameters,
    parse_args,
    row_specs,
    score_row,
    table,
)
from smolvla_bringup.demo.model import checkpoint_cameras
from so100_driver.sim.expert import ExpertTiming
from so100_driver.sim.task import HELD_OUT_SEEDS_FROM, placements

EXPERT_PLAN_S = sum(
    getattr(ExpertTiming(), phase) for phase in ("approach", "descend", "close", "lift", "hold")
)


def test_the_expert_succeeds_on_held_out_placements_and_is_timed(tmp_path):
    # an extra parameter file (--params) applies after the row's own: here it picks another task seed
    extra = tmp_path / "extra.yaml"
    extra.write_text(f"/**/arm:\n  ros__parameters:\n    task_seed: {HELD_OUT_SEEDS_FROM + 1}\n")
    options = Options(
        checkpoint="",
        episodes=2,
        timeout_s=15.0,
        cameras=("top",),
        image_size=(48, 64),
        camera_fps=5.0,
        extra_params=(str(extra),),
    )
    result = score_row(RowSpec("expert"), options)
    assert not result.error
    assert [e.success for e in result.episodes] == [True, True], result.episodes
    assert [e.episode for e in result.episodes] == [2, 3]  # the startup placement (1) is never scored
    scored = [float(part.split("=")[1]) for e in result.episodes for part in e.placement.split()]
    expected = [value for p in placements(HELD_OUT_SEEDS_FROM + 1, 3)[1:] for value in (p.x, p.y, p.yaw)]
    assert scored == pytest.approx(expected, abs=2e-3)  # the report rounds to 3 decimals
    for episode in result.episodes:
        # success needs the cube held up for 1 s: not before the lift, and before the plan ends
        assert 3.0 < episode.time_to_success_s < EXPERT_PLAN_S, episode
        # progress measures: the gripper frame reached the cube, which rose by the task's 3 cm at least
        assert episode.closest_approach_m < 0.05 and episode.highest_lift_m >= 0.03, episode
    summary = result.summary()
    assert (summary["successes"], summary["episodes"], summary["success_rate"]) == (2, 2, 1.0)
    assert "| expert | - | - | 2/2 (100%) |" in table([result])


def test_an_untrained_policy_fails_through_the_graph(tiny_checkpoint_factory):
    checkpoint = tiny_checkpoint_factory(image_shape=(3, 48, 64))
    cameras, size = checkpoint_cameras(str(checkpoint))
    options = Options(
        checkpoint=str(checkpoint),
        episodes=1,
        timeout_s=5.0,
        cameras=cameras,
        image_size=size,
        camera_fps=10.0,
        noise_seed=3,  # the node takes the seed (a bad value would leave it in error: no chunks)
    )
    result = score_row(RowSpec("policy", "async", 0.0), options)
    assert not result.error, result.error
    (episode,) = result.episodes
    assert episode.success is False and episode.time_to_success_s is None
    assert episode.chunks_received > 0  # the policy did drive the arm: it failed, it was not absent
    assert episode.highest_lift_m < 0.03 and episode.closest_approach_m > 0.0
    summary = result.summary()
    assert (summary["successes"], summary["episodes"]) == (0, 1)
    assert "0/1 (0%)" in table([result])


def test_row_parameters_carry_mode_latency_and_noise_settings():
    args = parse_args(["--noise-seed", "5", "--noise-scale", "0", "--modes", "sync", "--latencies", "0.3"])
    (spec,) = row_specs(args)
    options = Options(checkpoint="ckpt", noise_seed=args.noise_seed, noise_scale=args.noise_scale)
    params = graph_parameters(spec, options)
    policy = params["/**/policy"]["ros__parameters"]
    assert (policy["noise_seed"], policy["noise_scale"], policy["added_latency_s"]) == (5, 0.0, 0.3)
    assert params["/**/executor"]["ros__parameters"]["mode"] == "sync"
    assert (parse_args([]).noise_seed, parse_args([]).noise_scale) == (-1, 1.0)  # LeRobot's sampling


def test_the_learning_curve_scores_each_checkpoint_with_the_noise_settings_given(tmp_path, capsys):
    (tmp_path / "train" / "checkpoints").mkdir(parents=True)
    args = learning_curve.parse_args([str(tmp_path), "--noise-scale", "0", "--noise-seed", "4"])
    shipped = Path(__file__).resolve().parents[3] / "checkpoints" / "sim-pick-cube"
    options = learning_curve.closed_loop_options(args, shipped)
    assert (options.noise_scale, options.noise_seed) == (0.0, 4)
    assert (options.cameras, options.image_size) == checkpoint_cameras(str(shipped))
    assert learning_curve.parse_args([str(tmp_path)]).noise_scale == 1.0  # LeRobot's sampling by default
    with pytest.raises(SystemExit):
        learning_curve.parse_args([str(tmp_path), "--noise-scale", "nan"])
    assert "--noise-scale nan: must be a finite number >= 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", str(HELD_OUT_SEEDS_FROM - 1)], "training seeds"),
        (["--modes", "fast"], "--modes"),
        (["--latencies", "0,-0.3"], "must be >= 0"),
        (["--params", "no/such/executor.yaml"], "--params no/such/executor.yaml: no such file"),
        (["--noise-scale", "-1"], "--noise-scale -1.0: must be a finite number >= 0"),
        (["--noise-scale", "inf"], "--noise-scale inf: must be a finite number >= 0"),
    ],
)
def test_bad_command_lines_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
