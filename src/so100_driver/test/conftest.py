"""Test support shared by the driver tests: an audit of every Goal_Position that reached the servos."""

import math

import pytest

STEPS_PER_RAD = 4095 / (2 * math.pi)


class GoalAudit:
    """Checks the arm-safety rule on what the emulated servos really received.

    Every Goal_Position written over the bus must lie inside the joint's calibrated range and within
    ``max_step`` (plus ``slack_steps`` for the motion between the driver's read and its write) of where
    the shaft was at that instant. While the arm must hold (after an interruption, before any new
    command), :meth:`check` also asserts that no goal moves a servo anywhere new: each goal equals the
    shaft position (``hold_only``), or stays within the span of the pose held at the torque-on (``hold``,
    raw per servo id), the shaft and the previous goal: a joint pushed away by a hand may be followed
    (less force) and brought back, never sent elsewhere. A goal sync write gets no reply, so the emulator
    may apply it after the driver moved on: ``hold_from`` (emulator clock) is when the hold began, and
    writes applied before it belong to the time before.
    """

    def __init__(self, emu, joints, max_step: float, slack_steps: float = 4.0):
        self.emu = emu
        self.by_id = {j.servo_id: j for j in joints}
        self.limit = max_step * STEPS_PER_RAD + slack_steps
        self.slack = slack_steps
        self.seen = len(emu.goal_writes())
        self.checked = 0
        self.last_goal: dict[int, int] = {}

    def new_writes(self):
        writes = self.emu.goal_writes()
        fresh, self.seen = writes[self.seen :], len(writes)
        return fresh

    def check(self, hold_only: bool = False, hold=None, hold_from: float = -math.inf):
        """Audit the writes since the last call; returns them."""
        writes = self.new_writes()
        for w in writes:
            joint = self.by_id[w.servo_id]
            assert joint.range_min <= w.goal <= joint.range_max, f"goal outside the calibrated range: {w}"
            assert abs(w.goal - w.present) <= self.limit, f"goal more than max_step from the shaft: {w}"
            if hold is not None and w.time >= hold_from:
                span = (w.present, hold[w.servo_id], self.last_goal.get(w.servo_id, hold[w.servo_id]))
                assert min(span) - self.slack <= w.goal <= max(span) + self.slack, (
                    f"goal moves a held servo: {w}"
                )
            elif hold_only:
                assert abs(w.goal - w.present) <= self.slack, f"goal moves a servo that must hold: {w}"
            self.last_goal[w.servo_id] = w.goal
        self.checked += len(writes)
        return writes


@pytest.fixture
def goal_audit():
    """``goal_audit(emu, joints, max_step)`` -> a :class:`GoalAudit` starting from now."""
    return GoalAudit
