"""Tests of the ROS-free executor core (time-indexed plan, blending, requests, safety envelope).

Time is simulated: the tests call ``tick(now)`` with chosen node-clock times, so every expectation is exact.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from smolvla_common.executor_core import (
    BLEND_RULES,
    ArmReport,
    Chunk,
    ChunkExecutorCore,
    ExecutorConfig,
    JitterMeter,
    State,
)

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
DT = 1 / 30
T0 = 1000.0


def make_core(**overrides) -> ChunkExecutorCore:
    config = dict(joint_names=JOINTS, max_step_rad=10.0, chunk_timeout_s=0.0, joint_state_timeout_s=0.0)
    config.update(overrides)
    core = ChunkExecutorCore(ExecutorConfig(**config))
    core.on_arm_status(T0 - 100, ENABLED)
    core.on_joint_state(T0, JOINTS, np.zeros(6))
    core.start(T0)
    return core


ENABLED = ArmReport(True, 1, T0 - 100, "torque on")


def make_chunk(
    stamp: float, values: np.ndarray, chunk_id: int = 1, request_id: int = 0, dt: float = DT
) -> Chunk:
    values = np.asarray(values, float)
    if values.ndim == 1:
        values = np.repeat(values[:, None], 6, axis=1)
    return Chunk(chunk_id, request_id, stamp, dt, JOINTS, np.arange(len(values)) * dt, values)


def ramp(n: int = 50, start: float = 0.0, step: float = 0.01) -> np.ndarray:
    return start + step * np.arange(n)


def feed_state(core: ChunkExecutorCore, now: float, value: float = 0.0) -> None:
    assert core.on_joint_state(now, JOINTS, np.full(6, value)) is None


def run_ticks(core: ChunkExecutorCore, start: float, count: int) -> list:
    results = []
    for k in range(count):
        now = start + k * DT
        feed_state(core, now)
        results.append(core.tick(now))
    return results


# ---------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("overrides", "parameter"),
    [
        (dict(joint_names=()), "joint_names"),
        (dict(joint_names=("a", "a")), "joint_names"),
        (dict(rate_hz=0), "rate_hz"),
        (dict(mode="fast"), "mode"),
        (dict(threshold=1.5), "threshold"),
        (dict(blend="median"), "blend"),
        (dict(max_step_rad=0), "max_step_rad"),
        (dict(joint_min_rad=(0.0,)), "joint_min_rad"),
        (
            dict(joint_min_rad=(1.0,) * 6, joint_max_rad=(0.0,) * 6),
            "'joint_min_rad'.*below joint_max_rad for 'shoulder_pan'",
        ),
        (dict(request_timeout_s=-1), "request_timeout_s"),
    ],
)
def test_bad_configuration_names_the_parameter(overrides, parameter):
    config = dict(joint_names=JOINTS)
    config.update(overrides)
    with pytest.raises(ValueError, match=parameter):
        ExecutorConfig(**config)


# ---------------------------------------------------------------------------- time indexing


def test_first_chunk_starts_at_the_next_tick_and_follows_time():
    core = make_core()
    core.tick(T0)  # sends the initial request
    chunk = make_chunk(T0, ramp())
    run_ticks(core, T0 + DT, 9)  # idle until the chunk arrives
    assert core.on_chunk(T0 + 9.5 * DT, chunk).accepted
    # the robot held still since before the observation: action 0 at the next tick, then one per dt
    sent = [r.command[0] for r in run_ticks(core, T0 + 10 * DT, 10)]
    np.testing.assert_allclose(sent, ramp()[:10])


def test_action_slots_are_half_a_dt_around_their_time():
    core = make_core()
    core.tick(T0)
    run_ticks(core, T0 + DT, 2)
    core.on_chunk(T0 + 2.5 * DT, make_chunk(T0, ramp()))  # robot held still: action 0 at the next tick
    t0 = T0 + 3 * DT
    for offset, expected in [(0.0, 0), (0.49 * DT, 0), (0.51 * DT, 1), (1.0 * DT, 1), (2.49 * DT, 2)]:
        feed_state(core, t0 + offset)
        result = core.tick(t0 + offset)
        assert result.executed
        assert result.command[0] == pytest.approx(ramp()[expected])


def test_latency_compensation_drops_actions_whose_time_passed():
    core = make_core(blend="latest_only", threshold=0.0)
    core.tick(T0)
    core.on_chunk(T0, make_chunk(T0 - DT, ramp(50)))  # executes from the next tick T0 + DT
    run_ticks(core, T0 + DT, 10)  # executes actions 0..9
    now = T0 + 10 * DT
    # a chunk computed from an observation 0.2 s ago: the actions for the last 0.2 s are skipped
    newer = make_chunk(now - 0.2, ramp(50, start=1.0), chunk_id=2)
    assert core.on_chunk(now + 0.001, newer).accepted
    result = core.tick(now + DT)
    assert result.command[0] == pytest.approx(1.0 + 0.01 * round((DT + 0.2) / DT))


def test_hold_last_command_when_plan_runs_out_and_never_extrapolate():
    core = make_core(mode="sync")
    core.tick(T0)
    core.on_chunk(T0, make_chunk(T0, ramp(5)))
    results = run_ticks(core, T0 + DT, 12)
    commands = [r.command[0] for r in results]
    np.testing.assert_allclose(commands[:5], ramp(5))
    assert all(c == pytest.approx(ramp(5)[-1]) for c in commands[5:])
    assert [r.executed for r in results] == [True] * 5 + [False] * 7
    assert all(r.state == State.HOLDING for r in results[5:])
    stats = core.stats(T0 + 13 * DT)
    assert (stats.executed_steps, stats.idle_ticks, stats.idle_ticks_before_first_chunk) == (5, 7, 1)


# ---------------------------------------------------------------------------- blending


@pytest.mark.parametrize("rule", BLEND_RULES)
def test_blend_rules_over_the_overlap(rule):
    core = make_core(blend=rule, threshold=0.0)
    core.tick(T0)
    core.on_chunk(T0, make_chunk(T0 - DT, np.zeros(50)))  # old plan: 0 for 50 actions from T0 + DT
    run_ticks(core, T0 + DT, 1)
    now = T0 + 1.5 * DT
    # new chunk: 1.0 for 70 actions on the same grid; it overlaps the old plan for its remaining 48 actions
    assert core.on_chunk(now, make_chunk(T0 + DT, np.ones(70), chunk_id=2)).accepted
    values = [r.command[0] for r in run_ticks(core, T0 + 2 * DT, 68)]
    overlap, after = np.array(values[:48]), np.array(values[48:])
    np.testing.assert_allclose(after, 1.0)
    expected = {"latest_only": 1.0, "weighted_average": 0.7, "average": 0.5, "conservative": 0.3}
    if rule == "crossfade":
        np.testing.assert_allclose(overlap, np.arange(1, 49) / 49)
    else:
        np.testing.assert_allclose(overlap, expected[rule])


def test_old_actions_beyond_the_new_chunk_are_discarded():
    core = make_core(blend="latest_only", threshold=0.0)
    core.tick(T0)
    core.on_chunk(T0, make_chunk(T0 - DT, np.zeros(50)))
    run_ticks(core, T0 + DT, 1)
    core.on_chunk(T0 + 1.4 * DT, make_chunk(T0 + DT, np.ones(10), chunk_id=2))
    assert core.stats(T0 + 1.4 * DT).actions_left == 9
    results = run_ticks(core, T0 + 2 * DT, 12)
    assert [r.executed for r in results] == [True] * 9 + [False] * 3


def test_boundary_jump_is_the_plan_difference_at_the_switch():
    core = make_core(blend="latest_only", threshold=0.0)
    core.tick(T0)
    core.on_chunk(T0, make_chunk(T0 - DT, np.zeros(50)))
    run_ticks(core, T0 + DT, 3)
    verdict = core.on_chunk(T0 + 3.5 * DT, make_chunk(T0, np.full(50, 0.25), chunk_id=2))
    assert verdict.boundary_jump == pytest.approx(0.25)
    verdict = core.on_chunk(T0 + 3.6 * DT, make_chunk(T0 + DT, np.full(50, 0.25), chunk_id=3))
    assert verdict.boundary_jump == pytest.approx(0.0)
    stats = core.stats(T0 + 4 * DT)
    assert (stats.last_boundary_jump, stats.max_boundary_jump) == (pytest.approx(0.0), pytest.approx(0.25))


def test_crossfade_removes_the_jump_that_latest_only_shows():
    jumps = {}
    for rule in ("latest_only", "crossfade"):
        core = make_core(blend=rule, threshold=0.0)
        core.tick(T0)
        core.on_chunk(T0, make_chunk(T0 - DT, np.zeros(50)))
        run_ticks(core, T0 + DT, 5)
        core.on_chunk(T0 + 5.5 * DT, make_chunk(T0 + 5 * DT, np.full(50, 0.5), chunk_id=2))
        sent = np.array([r.command[0] for r in run_ticks(core, T0 + 6 * DT, 50)])
        jumps[rule] = np.max(np.abs(np.diff(np.concatenate([[0.0], sent]))))
    assert jumps["latest_only"] == pytest.approx(0.5)
    assert jumps["crossfade"] < 0.05


# ---------------------------------------------------------------------------- validation


def valid_chunk(**changes) -> Chunk:
    fields = dict(
        chunk_id=7,
        request_id=0,
        stamp=T0,
        dt=DT,
        joint_names=JOINTS,
        time_from_start=np.arange(50) * DT,
        positions=np.zeros((50, 6)),
    )
    fields.update(changes)
    return Chunk(**fields)


def nan_positions():
    positions = np.zeros((50, 6))
    positions[3, 2] = math.nan
    return positions


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (dict(joint_names=(*JOINTS[:5], "elbow")), "joint names"),
        (dict(joint_names=JOINTS[:5], positions=np.zeros((50, 5))), "joint names"),
        (dict(positions=nan_positions()), "NaN"),
        (dict(positions=np.full((50, 6), math.inf)), "NaN"),
        (dict(time_from_start=np.r_[np.arange(25), np.arange(25)] * DT), "strictly increasing"),
        (dict(time_from_start=np.arange(50) * 0.05), "i \\* dt"),
        (dict(dt=0.0), "dt must be positive"),
        (dict(stamp=T0 - 10.0), "every action is"),
        (dict(stamp=T0 + 5.0), "in the future"),
        (dict(positions=np.zeros((0, 6)), time_from_start=np.zeros(0)), "positions"),
    ],
)
def test_malformed_or_stale_chunks_are_dropped_with_a_reason(changes, reason):
    core = make_core()
    core.tick(T0)
    verdict = core.on_chunk(T0 + 0.05, valid_chunk(**changes))
    assert not verdict.accepted
    assert reason.replace("\\", "") in verdict.reason or pytest.fail(verdict.reason)
    stats = core.stats(T0 + 0.05)
    assert (stats.chunks_received, stats.chunks_dropped, stats.actions_left) == (1, 1, 0)
    assert reason.replace("\\", "") in stats.last_drop_reason


def test_expected_dt_mismatch_duplicate_id_and_reordered_names():
    core = make_core(expected_dt_s=DT)
    core.tick(T0)
    assert (
        "expected_dt_s"
        in core.on_chunk(T0, valid_chunk(dt=0.05, time_from_start=np.arange(50) * 0.05)).reason
    )
    reordered = valid_chunk(joint_names=JOINTS[::-1], positions=np.tile(np.arange(6.0)[::-1] / 10, (50, 1)))
    assert core.on_chunk(T0, reordered).accepted
    assert "duplicate chunk id 7" in core.on_chunk(T0 + 0.01, reordered).reason
    result = core.tick(T0 + DT)
    np.testing.assert_allclose(result.command, np.arange(6.0) / 10)  # columns mapped by name


def test_chunks_are_dropped_while_stopped_paused_or_without_joint_state():
    core = make_core(joint_state_timeout_s=0.5)
    core.tick(T0)
    core.pause(T0)
    assert "paused" in core.on_chunk(T0, valid_chunk()).reason
    core.stop(T0)
    assert "STOPPED" in core.on_chunk(T0, valid_chunk(chunk_id=8)).reason
    core.start(T0 + 2.0)
    assert "no fresh joint state" in core.on_chunk(T0 + 2.0, valid_chunk(chunk_id=9, stamp=T0 + 2)).reason


def test_bad_joint_states_are_reported_and_ignored():
    core = make_core()
    assert "lacks joints" in core.on_joint_state(T0, JOINTS[:3], np.zeros(3))
    assert "non-finite" in core.on_joint_state(T0, JOINTS, np.r_[np.zeros(5), math.nan])
    assert "names but" in core.on_joint_state(T0, JOINTS, np.zeros(4))


# ---------------------------------------------------------------------------- requests


def test_async_requests_at_the_threshold_with_pending_actions_and_one_outstanding():
    core = make_core(threshold=0.5, request_timeout_s=1.0)
    first = core.tick(T0).request
    assert first is not None and first.must_go and first.request_id == 1
    assert len(first.pending_positions) == 0
    assert core.tick(T0 + DT).request is None  # outstanding: no second request
    core.on_chunk(T0 + 1.5 * DT, make_chunk(T0, ramp(50), request_id=1))
    requests = [(k, r.request) for k, r in enumerate(run_ticks(core, T0 + 2 * DT, 30)) if r.request]
    assert len(requests) == 1
    tick_index, request = requests[0]
    assert tick_index == 24  # after executing action 24, 25 of 50 actions are left: 25 / 50 <= 0.5
    assert not request.must_go and request.request_id == 2
    np.testing.assert_allclose(request.pending_positions[:, 0], ramp(50)[25:])
    np.testing.assert_allclose(request.pending_time_from_start, (np.arange(25) + 1) * DT, atol=1e-9)
    # no answer: re-request after request_timeout_s
    later = run_ticks(core, T0 + 32 * DT, 40)
    again = [r.request for r in later if r.request]
    assert len(again) == 1 and again[0].request_id == 3 and again[0].must_go
    assert core.stats(T0 + 80 * DT).request_timeouts == 1


def test_sync_mode_requests_only_when_empty_and_runs_the_whole_chunk():
    core = make_core(mode="sync")
    assert core.tick(T0).request.must_go
    run_ticks(core, T0 + DT, 24)
    core.on_chunk(T0 + 24.5 * DT, make_chunk(T0, ramp(50), request_id=1))
    results = run_ticks(core, T0 + 25 * DT, 50)
    assert all(r.executed for r in results)
    np.testing.assert_allclose([r.command[0] for r in results], ramp(50))  # whole chunk, no skipping
    assert [r.request for r in results if r.request] == []
    assert "still executing" in core.on_chunk(T0 + 1.0, make_chunk(T0 + 0.9, ramp(50), chunk_id=2)).reason
    idle = core.tick(T0 + 75 * DT)
    assert idle.request is not None and idle.request.must_go and not idle.executed


def test_sync_runs_the_whole_next_chunk_even_from_an_observation_before_the_hold():
    core = make_core(mode="sync")
    core.tick(T0)
    core.on_chunk(T0 + 0.5 * DT, make_chunk(T0, ramp(5), request_id=1))
    run_ticks(core, T0 + DT, 5)  # actions 0..4; the last one's slot ends at T0 + 5.5 dt
    request = core.tick(T0 + 6 * DT).request
    assert request is not None and request.must_go
    # the policy used the joint state of the tick that executed the last action (before the hold began)
    core.on_chunk(T0 + 6.5 * DT, make_chunk(T0 + 5 * DT, ramp(50, start=1.0), chunk_id=2, request_id=2))
    sent = [r.command[0] for r in run_ticks(core, T0 + 7 * DT, 50)]
    np.testing.assert_allclose(sent, ramp(50, start=1.0))


def simulate(mode: str, latency: float, actions: int = 600, blend: str = "weighted_average", threshold=0.5):
    """A policy answering every request after ``latency`` s with 50 actions of a smooth trajectory."""
    core = make_core(mode=mode, blend=blend, threshold=threshold)
    pending: list[tuple[float, Chunk]] = []
    chunk_id = 0
    now = T0
    first_exec = None
    while core.stats(now).executed_steps < actions and now < T0 + 200:
        for due, chunk in [p for p in pending if p[0] <= now + 1e-9]:
            pending.remove((due, chunk))
            core.on_chunk(due, chunk)
        feed_state(core, now)
        result = core.tick(now)
        if result.executed and first_exec is None:
            first_exec = now
        if result.request:
            chunk_id += 1
            values = np.sin(now + np.arange(50) * DT)
            pending.append((now + latency, make_chunk(now, values, chunk_id, result.request.request_id)))
        now += DT
    return core.stats(now), now - T0


@pytest.mark.parametrize("latency", [0.3, 0.8])
def test_async_has_no_idle_ticks_after_the_first_chunk_when_latency_fits(latency):
    stats, elapsed = simulate("async", latency)
    assert stats.idle_ticks == 0
    assert stats.idle_ticks_before_first_chunk == round(latency / DT)
    assert elapsed == pytest.approx(latency + 600 * DT, abs=2 * DT)


def test_async_with_long_latency_idles_the_expected_time_and_sync_idles_every_chunk():
    stats, _ = simulate("async", 1.5)
    # each cycle: the request goes out with 25 actions left (0.83 s); the plan runs dry 0.67 s before the
    # answer, and stall compensation resumes the chunk where the robot stopped: 25 actions per 1.5 s
    cycles = (600 - 50) / 25
    assert stats.idle_ticks == pytest.approx(cycles * round((1.5 - 25 * DT) / DT), abs=2 * cycles)
    sync, elapsed = simulate("sync", 0.3)
    assert sync.idle_ticks == pytest.approx(11 * round(0.3 / DT), abs=12)
    assert elapsed == pytest.approx(12 * (0.3 + 50 * DT), abs=12 * 2 * DT)


# ---------------------------------------------------------------------------- safety envelope


def test_joint_limits_and_step_limit():
    core = make_core(
        max_step_rad=0.1, joint_min_rad=(-0.5,) * 6, joint_max_rad=(0.5,) * 6, mode="sync", threshold=0.0
    )
    core.tick(T0)
    core.on_chunk(T0, make_chunk(T0, np.full(20, 2.0)))
    sent = [r.command[0] for r in run_ticks(core, T0 + DT, 8)]
    np.testing.assert_allclose(sent, [0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5])
    assert core.stats(T0).limited_ticks == 8


def test_deadman_on_stale_joint_state_holds_drops_the_plan_and_stops_requesting():
    core = make_core(joint_state_timeout_s=0.2)
    core.tick(T0)
    core.on_chunk(T0, make_chunk(T0, ramp(50), request_id=1))
    run_ticks(core, T0 + DT, 5)
    held = core.tick(T0 + 5 * DT).command
    results = [core.tick(T0 + 5 * DT + 0.25 + k * DT) for k in range(40)]  # no joint state any more
    assert all(r.state == State.HOLDING and not r.executed and r.request is None for r in results)
    assert all(np.array_equal(r.command, held) for r in results)
    assert "deadman" in results[-1].message
    assert core.stats(T0 + 3).actions_left == 0


def test_no_command_before_the_first_joint_state():
    core = ChunkExecutorCore(ExecutorConfig(joint_names=JOINTS))
    core.on_arm_status(T0, ENABLED)
    core.start(T0)
    result = core.tick(T0)
    assert result.command is None and "no joint state" in result.message
    feed_state(core, T0 + DT, 0.3)
    np.testing.assert_allclose(core.tick(T0 + DT).command, 0.3)  # holds where the arm is


def test_chunk_deadman_holds_when_no_chunk_arrives():
    core = make_core(chunk_timeout_s=0.5, mode="sync")
    core.tick(T0)
    core.on_chunk(T0, make_chunk(T0, ramp(50)))
    results = run_ticks(core, T0 + DT, 30)
    fired = next(k for k, r in enumerate(results) if "no chunk" in r.message)
    assert (T0 + (fired + 1) * DT) - T0 == pytest.approx(0.5, abs=DT)
    assert not any(r.executed for r in results[fired:])


def test_estop_pause_resume_stop():
    core = make_core(mode="sync")
    core.tick(T0)
    core.on_chunk(T0, make_chunk(T0, ramp(50)))
    run_ticks(core, T0 + DT, 10)  # actions 0..9
    assert core.pause(T0 + 10.5 * DT)[0]
    # a pause sent again (smolvla-ctl resends unanswered commands) succeeds and keeps the first pause time
    assert core.pause(T0 + 20 * DT) == (True, "already paused")
    paused = run_ticks(core, T0 + 11 * DT, 30)
    assert all(r.state == State.PAUSED and not r.executed for r in paused)
    assert all(r.command is None for r in paused)  # the arm holds its last goal by itself
    assert core.start(T0 + 41 * DT)[0]  # start resumes from pause; the plan was frozen in time
    resumed = run_ticks(core, T0 + 41 * DT, 3)
    np.testing.assert_allclose([r.command[0] for r in resumed], ramp()[10:13])
    assert core.resume(T0 + 44 * DT) == (True, "already running")  # no second shift of the plan
    np.testing.assert_allclose(core.tick(T0 + 44 * DT).command[0], ramp()[13])
    core.estop(T0 + 45 * DT)
    stopped = run_ticks(core, T0 + 45 * DT, 5)
    assert all(r.state == State.ESTOP and r.command is None and r.request is None for r in stopped)
    assert core.stats(T0 + 50 * DT).actions_left == 0
    core.stop(T0 + 50 * DT)
    assert core.tick(T0 + 51 * DT).command is None


# ---------------------------------------------------------------------------- arm interruptions


def test_nothing_is_commanded_until_the_arm_says_it_is_enabled():
    core = ChunkExecutorCore(ExecutorConfig(joint_names=JOINTS, joint_state_timeout_s=0.0))
    core.start(T0)
    feed_state(core, T0, 0.2)
    result = core.tick(T0)
    assert result.command is None and result.request is None
    assert "waiting for the arm: no status from the arm node yet" in result.message
    assert "not enabled" in core.on_chunk(T0, make_chunk(T0, ramp(20))).reason
    core.on_arm_status(T0 + DT, ArmReport(False, 0, 0.0, "torque off"))
    assert "waiting for the arm: torque off" in core.tick(T0 + DT).message
    assert core.on_arm_status(T0 + 2 * DT, ArmReport(True, 1, T0 + 2 * DT, "torque on"))
    feed_state(core, T0 + 2 * DT, 0.2)
    np.testing.assert_allclose(core.tick(T0 + 3 * DT).command, 0.2)  # holds where the arm is


@pytest.mark.parametrize("interruption", ["fault", "new_epoch", "arm_node_restart"])
def test_an_arm_interruption_drops_the_plan_and_resumes_from_the_measured_pose(interruption):
    """Item 3: the executor kept commanding 1.5 rad while the arm sagged to -0.8 rad with torque off; when
    torque returned, the arm drove back at full speed. Now the plan is gone and motion restarts where the
    arm is, from chunks computed after the torque-on."""
    core = make_core(max_step_rad=0.1)
    core.tick(T0)
    core.on_chunk(T0, make_chunk(T0, np.full(60, 1.5), request_id=1))
    run_ticks(core, T0 + DT, 20)
    assert core.stats(T0 + 21 * DT).last_command[0] == pytest.approx(1.5)
    t_fault = T0 + 21 * DT
    if interruption == "fault":
        assert "arm not enabled" in core.on_arm_status(t_fault, ArmReport(False, 1, T0 - 1, "FAULT: hot"))
        during = [core.tick(t_fault + k * DT) for k in range(1, 10)]
        assert all(r.command is None and r.request is None for r in during)
        assert "waiting for the arm: FAULT: hot" in during[-1].message
    t_on = t_fault + 10 * DT
    epoch = 1 if interruption == "arm_node_restart" else 2  # a new arm node counts from 1 again
    assert f"epoch {epoch}" in core.on_arm_status(t_on, ArmReport(True, epoch, t_on, "torque on"))
    assert core.on_joint_state(t_on + DT, JOINTS, np.full(6, 1.5), stamp=t_on - DT) is None  # before: ignored
    assert core.tick(t_on + DT).command is None  # no pose measured since the torque-on yet
    feed_state_at = t_on + 2 * DT
    assert core.on_joint_state(feed_state_at, JOINTS, np.full(6, -0.8), stamp=feed_state_at) is None
    held = core.tick(feed_state_at)
    np.testing.assert_allclose(held.command, -0.8)  # where the arm sagged to, not 1.5
    assert held.request is not None and held.request.must_go
    old = core.on_chunk(feed_state_at, make_chunk(t_on - 0.05, np.full(30, 1.5), chunk_id=7))
    assert not old.accepted and f"older than the arm's latest torque-on (epoch {epoch})" in old.reason
    new = make_chunk(
        feed_state_at, np.linspace(-0.8, 0.4, 30), chunk_id=8, request_id=held.request.request_id
    )
    assert core.on_chunk(feed_state_at + DT, new).accepted
    sent = [core.tick(feed_state_at + k * DT).command[0] for k in range(2, 6)]
    assert sent[0] == pytest.approx(-0.8, abs=0.05) and all(np.diff([-0.8, *sent]) <= 0.1 + 1e-9)


def test_latency_accounting():
    core = make_core()
    core.tick(T0)
    core.on_chunk(T0 + 0.4, make_chunk(T0, ramp(50), request_id=1))
    run_ticks(core, T0 + 0.4 + DT, 1)
    stats = core.stats(T0 + 1)
    assert stats.last_observation_to_execution_s == pytest.approx(0.4 + DT)
    assert stats.last_receipt_to_execution_s == pytest.approx(DT)
    assert stats.last_request_round_trip_s == pytest.approx(0.4)


def test_jitter_meter():
    meter = JitterMeter(0.01, window=100)
    for t in [0.0, 0.010, 0.021, 0.030, 0.040]:
        meter.record(t)
    assert meter.maximum() == pytest.approx(0.001)
    assert meter.percentile(50) == pytest.approx(0.0005)


def test_the_executor_never_imports_torch():
    """The executor runs next to the arm (e.g. a Raspberry Pi without torch): check in a fresh interpreter."""
    code = (
        "import sys, smolvla_common.executor_core, smolvla_common.executor_node; "
        "print(sorted(m for m in ('torch', 'transformers', 'smolvla_policy.model') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_reconfigure_changes_live_fields_only_and_validates_them():
    core = ChunkExecutorCore(ExecutorConfig(joint_names=JOINTS))
    core.reconfigure(threshold=0.2, mode="sync", blend="crossfade")
    assert (core.config.threshold, core.config.mode, core.config.blend) == (0.2, "sync", "crossfade")
    with pytest.raises(ValueError, match="'rate_hz' is read at startup only"):
        core.reconfigure(rate_hz=60.0)
    with pytest.raises(ValueError, match="'blend'"):
        core.reconfigure(blend="median")
    assert core.config.blend == "crossfade" and core.config.rate_hz == 30.0
