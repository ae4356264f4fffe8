"""The command rules shared by the real follower and the simulated arm (:class:`JointTargets`)."""

import math

import pytest

from so100_driver.arm import CommandError, JointTargets

NAMES = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


def targets_at(targets: JointTargets, now: float) -> list[float]:
    sample = targets.sample(now)
    return [sample[n] for n in NAMES]


def test_a_trajectory_starts_at_its_stamp_from_the_held_targets_and_holds_its_last_point():
    targets = JointTargets(NAMES)
    targets.command(10.0, ["elbow_flex", "shoulder_pan"], [(1.0, [0.5, 1.0]), (2.0, [1.0, 1.0])])
    assert targets_at(targets, 9.0) == pytest.approx([0.0] * 6)  # before the start: the targets held
    assert targets_at(targets, 10.5) == pytest.approx([0.5, 0, 0.25, 0, 0, 0])
    assert targets_at(targets, 11.5) == pytest.approx([1.0, 0, 0.75, 0, 0, 0])
    assert targets_at(targets, 99.0) == pytest.approx([1.0, 0, 1.0, 0, 0, 0])
    # A new plan starts from where the old one was when it arrived, at its own stamp.
    targets.command(10.5, ["gripper"], [(1.0, [1.0])], start_time=10.5)
    assert targets_at(targets, 11.0) == pytest.approx([0.5, 0, 0.25, 0, 0, 0.5])
    targets.settle(12.0)
    assert targets.plan is None and targets_at(targets, 50.0) == pytest.approx([0.5, 0, 0.25, 0, 0, 1.0])


@pytest.mark.parametrize(
    ("names", "points", "message"),
    [
        (["gripper"], [(1.0, [math.nan])], "non-finite"),
        (["elbow"], [(1.0, [0.0])], "unknown joint"),
        (["gripper"], [], "no points"),
        (["gripper"], [(1.0, [0.1, 0.2])], "positions for 1 joint"),
        (["gripper"], [(2.0, [0.1]), (1.0, [0.2])], "back in time"),
    ],
)
def test_invalid_commands_are_refused_and_the_old_plan_kept(names, points, message):
    targets = JointTargets(NAMES)
    targets.command(0.0, ["gripper"], [(1.0, [1.0])])
    with pytest.raises(CommandError, match=message):
        targets.command(0.5, names, points)
    assert targets.rejected == 1 and targets.accepted == 1 and message in targets.last_rejection
    assert targets.sample(0.5)["gripper"] == pytest.approx(0.5)


def test_commands_wait_for_torque_and_must_be_newer_than_the_latest_torque_on():
    targets = JointTargets(NAMES)
    with pytest.raises(CommandError, match="enable torque first"):
        targets.command(1.0, ["gripper"], [(1.0, [0.2])], not_enabled="enable torque first")
    targets.hold(dict.fromkeys(NAMES, 0.3), enabled_since=5.0)
    with pytest.raises(CommandError, match="before torque was last enabled"):
        targets.command(6.0, ["gripper"], [(1.0, [0.2])], start_time=4.9)
    targets.command(6.0, ["gripper"], [(1.0, [0.2])], start_time=5.1)
    assert targets.rejected == 2 and targets.accepted == 1
    assert targets.sample(5.0)["shoulder_pan"] == pytest.approx(0.3)  # held where torque came on


def test_a_backed_off_joint_leaves_the_trajectory_and_holds():
    targets = JointTargets(NAMES)
    targets.command(0.0, ["elbow_flex", "gripper"], [(1.0, [1.0, 1.0])])
    targets.hold_joint("gripper", 0.1)
    sample = targets.sample(0.5)
    assert sample["gripper"] == pytest.approx(0.1) and sample["elbow_flex"] == pytest.approx(0.5)
    targets.hold_joint("elbow_flex", 0.4)
    assert targets.plan is None and targets.sample(2.0)["elbow_flex"] == pytest.approx(0.4)
