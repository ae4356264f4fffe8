"""Executor node over real DDS (rclpy, own ROS domain per test session).

The policy side is a small fake node defined here that answers ``/smolvla/request`` with known chunks
after a chosen latency: the real policy node is written separately (and needs a model), and these tests
are about the executor's behaviour on the wire. The arm side is a fake that publishes ``/joint_states`` and
a latched ``/arm/status``, records ``/joint_commands`` and serves ``/arm/torque``; the real arm node is
tested in ``so100_driver``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from smolvla_common.executor_node import ExecutorNode
from smolvla_common.joints import SO101_JOINTS
from smolvla_common.timeutil import duration_msg as duration
from smolvla_msgs.msg import ActionChunk, ArmStatus, ChunkRequest, ExecutorStatus

DT = 1 / 30
SLOPE = 0.3  # rad/s of the reference trajectory


class FakePolicy(Node):
    """Answers each request after ``latency`` s with 50 actions that continue the newest observed joint state
    at ``SLOPE`` rad/s (all joints); the chunk stamp is that joint state's stamp, as the real policy does."""

    def __init__(self, context, latency: float = 0.2, **kwargs) -> None:
        super().__init__("fake_policy", context=context, **kwargs)
        self.latency = latency
        self.answering = True
        self.observation = None
        self.requests: list[ChunkRequest] = []
        self._due: list[tuple[float, ChunkRequest]] = []
        self._lock = threading.Lock()
        self.chunk_pub = self.create_publisher(ActionChunk, "/smolvla/action_chunk", 10)
        self.create_subscription(ChunkRequest, "/smolvla/request", self._on_request, 10)
        self.create_subscription(JointState, "/joint_states", self._on_state, 10)
        self.create_timer(0.01, self._flush)
        self.next_chunk_id = 1

    def _on_state(self, msg: JointState) -> None:
        self.observation = msg

    def _on_request(self, msg: ChunkRequest) -> None:
        with self._lock:
            self.requests.append(msg)
            if self.answering and self.observation is not None:
                self._due.append((time.monotonic() + self.latency, self.observation))

    def _flush(self) -> None:
        with self._lock:
            ready = [d for d in self._due if d[0] <= time.monotonic()]
            self._due = [d for d in self._due if d[0] > time.monotonic()]
        for _, observation in ready:
            values = observation.position[0] + SLOPE * np.arange(50) * DT
            request_id = self.requests[-1].request_id
            self.publish(make_chunk_msg(self.next_chunk_id, request_id, observation.header.stamp, values))
            self.next_chunk_id += 1

    def publish(self, msg: ActionChunk) -> None:
        self.chunk_pub.publish(msg)


def make_chunk_msg(chunk_id, request_id, stamp, values, names=SO101_JOINTS, dt=DT) -> ActionChunk:
    msg = ActionChunk(
        chunk_id=chunk_id, request_id=request_id, task="test", policy_id="fake", dt=duration(dt)
    )
    msg.header.stamp = stamp
    msg.trajectory = JointTrajectory(joint_names=list(names))
    msg.trajectory.points = [
        JointTrajectoryPoint(positions=[float(v)] * len(names), time_from_start=duration(i * dt))
        for i, v in enumerate(values)
    ]
    return msg


class FakeArm(Node):
    """An ideal arm: publishes /joint_states at 50 Hz with the last command, stamped with that command's stamp
    (as if each command were reached exactly at its time), records commands, serves /arm/torque (answering
    ``torque_answer``; None: no service) and latches /arm/status (enabled from its start, epoch 1)."""

    def __init__(self, context, torque_answer: bool | None = True, **kwargs) -> None:
        super().__init__("arm", context=context, **kwargs)
        self.commands: list[tuple[float, np.ndarray]] = []
        self.shadow: list[JointTrajectory] = []
        self.statuses: list[ExecutorStatus] = []
        self.torque_calls: list[bool] = []
        self.torque_answer = torque_answer
        self.position = np.zeros(6)
        self.position_stamp = None
        self.publishing = True
        self.epoch = 0
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.status_pub = self.create_publisher(ArmStatus, "/arm/status", latched)
        self.set_enabled(True)
        self.state_pub = self.create_publisher(JointState, "/joint_states", 10)
        self.create_subscription(JointTrajectory, "/joint_commands", self._on_command, 10)
        self.create_subscription(JointTrajectory, "/executor/shadow_command", self.shadow.append, 10)
        self.create_subscription(ExecutorStatus, "/smolvla/executor_status", self.statuses.append, 10)
        if torque_answer is not None:
            self.create_service(SetBool, "~/torque", self._on_torque)
        self.create_timer(0.02, self._publish_state)

    def set_enabled(self, enabled: bool, position: np.ndarray | None = None) -> None:
        """Publish the arm's status; enabling starts a new epoch (where the arm is: ``position``)."""
        status = ArmStatus(state=ArmStatus.STATE_ENABLED if enabled else ArmStatus.STATE_FAULT)
        now = self.get_clock().now()
        if enabled:
            self.epoch += 1
            if position is not None:
                self.position, self.position_stamp = np.asarray(position, float), now.to_msg()
        status.epoch = self.epoch
        status.enabled_since = now.to_msg() if enabled else self._since
        status.message = "torque on" if enabled else "FAULT: test"
        self._since = status.enabled_since
        status.header.stamp = now.to_msg()
        self.status_pub.publish(status)

    def _on_command(self, msg: JointTrajectory) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.position = np.array(msg.points[0].positions)
        self.position_stamp = msg.header.stamp
        self.commands.append((stamp, self.position.copy()))

    def _on_torque(self, request, response):
        self.torque_calls.append(request.data)
        response.success = self.torque_answer
        response.message = "torque disabled" if self.torque_answer else "servo 3 did not acknowledge"
        return response

    def _publish_state(self) -> None:
        if self.publishing:
            msg = JointState(name=list(SO101_JOINTS), position=self.position.tolist())
            msg.header.stamp = self.position_stamp or self.get_clock().now().to_msg()
            self.state_pub.publish(msg)


class Rig:
    """Executor node + fake policy + fake arm spinning in a SingleThreadedExecutor thread; with ``sim_time``
    every node uses ``/clock``, published here from 1000 s on at wall-clock speed."""

    def __init__(
        self, latency: float = 0.2, sim_time: bool = False, torque_answer: bool | None = True, **parameters
    ) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        sim = [Parameter("use_sim_time", value=True)] if sim_time else []
        overrides = [Parameter(k, value=v) for k, v in {"start_on_launch": True, **parameters}.items()]
        self.executor_node = ExecutorNode(context=self.context, parameter_overrides=overrides + sim)
        self.policy = FakePolicy(self.context, latency, parameter_overrides=sim)
        self.arm = FakeArm(self.context, torque_answer, parameter_overrides=sim)
        self.helper = Node("test_client", context=self.context)
        if sim_time:
            clock_pub = self.helper.create_publisher(Clock, "/clock", 10)
            start = time.monotonic()

            def publish_clock() -> None:
                t = 1000.0 + time.monotonic() - start
                clock_pub.publish(Clock(clock=Time(sec=int(t), nanosec=int((t % 1) * 1e9))))

            self.helper.create_timer(0.005, publish_clock)
        self.executor = SingleThreadedExecutor(context=self.context)
        for node in (self.executor_node, self.policy, self.arm, self.helper):
            self.executor.add_node(node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def call(self, srv_type, name: str, request):
        client = self.helper.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=5.0), f"service {name} not available"
        future = client.call_async(request)
        wait_for(future.done, 5.0, f"no answer from {name}")
        self.helper.destroy_client(client)
        return future.result()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5.0)
        # rclpy's Executor.shutdown does not wait for callbacks already handed to the thread pool (they then
        # touch a destroyed guard condition): give them a moment to finish first.
        time.sleep(0.2)
        self.executor.shutdown()
        for node in (self.executor_node, self.policy, self.arm, self.helper):
            node.destroy_node()
        rclpy.shutdown(context=self.context)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def make_rig():
    rigs: list[Rig] = []

    def factory(**kwargs) -> Rig:
        rigs.append(Rig(**kwargs))
        return rigs[-1]

    yield factory
    for rig in rigs:
        rig.close()


def test_commands_follow_the_chunks_by_time_then_hold_when_the_policy_stops(make_rig):
    rig = make_rig(latency=0.1, blend="weighted_average", max_step_rad=1.0, joint_state_timeout_s=2.0)
    wait_for(lambda: len(rig.arm.commands) > 90, 30.0, "90 commands")
    rig.policy.answering = False
    stats = rig.executor_node.stats()
    assert stats.idle_ticks == 0 and stats.chunks_received >= 3 and stats.chunks_dropped == 0
    # after the first chunk (started at the next tick: stall compensation), every command is the reference
    # at its own time minus one constant offset: the plan is followed by time, across chunk switches
    times, values = zip(*[(t, v[0]) for t, v in rig.arm.commands], strict=True)
    times, values = np.array(times), np.array(values)
    moving = values > 0
    offsets = times[moving] - values[moving] / SLOPE
    assert np.ptp(offsets) < 1.5 * DT, offsets
    assert np.all(np.diff(values[moving]) >= -1e-9)
    # the policy stopped answering: the plan runs out and the executor holds the last command
    wait_for(lambda: rig.executor_node.stats().idle_ticks > 15, 15.0, "idle ticks")
    held = [v for _, v in rig.arm.commands[-10:]]
    assert all(np.array_equal(v, held[0]) for v in held)
    wait_for(
        lambda: rig.arm.statuses and rig.arm.statuses[-1].state == ExecutorStatus.STATE_HOLDING,
        2.0,
        "HOLDING",
    )
    assert "nothing planned" in rig.arm.statuses[-1].message
    assert rig.arm.statuses[-1].actions_left == 0


def test_requests_carry_pending_actions_and_one_is_outstanding(make_rig):
    rig = make_rig(latency=0.5)
    wait_for(lambda: len(rig.policy.requests) >= 3, 30.0, "3 requests")
    first, second = rig.policy.requests[:2]
    assert first.must_go and len(first.pending.points) == 0 and first.request_id == 1
    assert not second.must_go and second.request_id == 2
    # triggered at threshold 0.5 of 50 actions: 25 left (fewer if a late tick skipped a slot)
    assert 20 <= len(second.pending.points) <= 25
    pending_times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in second.pending.points]
    assert 0 < pending_times[0] <= 2 * DT and np.allclose(np.diff(pending_times), DT)
    assert list(second.pending.joint_names) == list(SO101_JOINTS)
    assert rig.executor_node.stats().idle_ticks == 0


def test_malformed_and_stale_chunks_are_dropped_with_a_status_message(make_rig):
    rig = make_rig(latency=0.2)
    rig.policy.answering = False
    wait_for(lambda: len(rig.arm.commands) > 5, 15.0, "hold commands")
    now = rig.policy.get_clock().now().to_msg()
    bad = {
        "NaN": make_chunk_msg(101, 0, now, [math.nan] * 50),
        "joint names": make_chunk_msg(102, 0, now, np.zeros(50), names=["a", "b", "c", "d", "e", "f"]),
        "older than the arm's latest torque-on": make_chunk_msg(
            103, 0, rig.policy.get_clock().now().to_msg(), np.zeros(5)
        ),
    }
    stale = bad["older than the arm's latest torque-on"]
    stale.header.stamp.sec -= 10
    ragged = make_chunk_msg(104, 0, now, np.zeros(3))
    ragged.trajectory.points[1].positions = [0.0]
    bad["different numbers of positions"] = ragged
    for reason, msg in bad.items():
        rig.policy.publish(msg)
        wait_for(
            lambda reason=reason: any(
                reason in s.message and "dropped" in s.message for s in rig.arm.statuses
            ),
            3.0,
            f"status message about {reason!r}",
        )
    stats = rig.executor_node.stats()
    assert stats.chunks_dropped == 4 and stats.executed_steps == 0
    assert all(np.array_equal(v, np.zeros(6)) for _, v in rig.arm.commands)


def test_estop_and_pause(make_rig):
    rig = make_rig(latency=0.1)
    wait_for(lambda: rig.executor_node.stats().executed_steps > 10, 15.0, "execution")
    paused = rig.call(SetBool, "/executor/pause", SetBool.Request(data=True))
    assert paused.success, paused.message
    time.sleep(0.1)  # let the commands already on the wire arrive
    count = len(rig.arm.commands)
    time.sleep(0.3)
    assert len(rig.arm.commands) == count  # paused: the arm holds its last goal, nothing is sent
    wait_for(lambda: rig.arm.statuses[-1].state == ExecutorStatus.STATE_PAUSED, 15.0, "PAUSED status")
    assert rig.call(SetBool, "/executor/pause", SetBool.Request(data=False)).success
    steps = rig.executor_node.stats().executed_steps
    wait_for(lambda: rig.executor_node.stats().executed_steps > steps + 5, 15.0, "execution after resume")

    answer = rig.call(Trigger, "/executor/estop", Trigger.Request())
    assert answer.success and "torque disable ok (torque disabled)" in answer.message, answer.message
    assert rig.arm.torque_calls == [False]
    time.sleep(0.1)
    count = len(rig.arm.commands)
    time.sleep(0.3)
    assert len(rig.arm.commands) == count  # e-stop: nothing is commanded at all
    wait_for(lambda: rig.arm.statuses[-1].state == ExecutorStatus.STATE_ESTOP, 15.0, "ESTOP status")
    assert rig.call(Trigger, "/executor/stop", Trigger.Request()).success
    time.sleep(0.2)
    count = len(rig.arm.commands)
    time.sleep(0.3)
    assert len(rig.arm.commands) == count  # stopped: nothing is commanded


@pytest.mark.parametrize("torque_answer", [None, False])
def test_estop_fails_when_the_arm_does_not_confirm_torque_off(make_rig, torque_answer):
    """Item 6: no torque service, or one that reports failure: the e-stop says so (and still commands
    nothing)."""
    rig = make_rig(latency=0.1, torque_answer=torque_answer)
    wait_for(lambda: rig.executor_node.stats().executed_steps > 5, 15.0, "execution")
    answer = rig.call(Trigger, "/executor/estop", Trigger.Request())
    assert not answer.success
    expected = "not available: torque NOT disabled" if torque_answer is None else "FAILED (servo 3"
    assert expected in answer.message, answer.message
    time.sleep(0.1)
    count = len(rig.arm.commands)
    time.sleep(0.3)
    assert len(rig.arm.commands) == count


def test_an_arm_fault_stops_the_commands_and_re_enabling_resumes_where_the_arm_is(make_rig):
    """Item 3 on the wire: the arm faults while a chunk runs, sags, and is enabled again."""
    rig = make_rig(latency=0.1, max_step_rad=0.05, joint_state_timeout_s=2.0)
    wait_for(lambda: rig.executor_node.stats().executed_steps > 20, 15.0, "execution")
    rig.arm.set_enabled(False)
    wait_for(lambda: "waiting for the arm: FAULT: test" in rig.executor_node.stats().message, 5.0, "waiting")
    time.sleep(0.1)
    count = len(rig.arm.commands)
    time.sleep(0.3)
    assert len(rig.arm.commands) == count  # nothing is commanded while the arm is not enabled
    before_enable = rig.arm.commands[-1][1][0]
    sagged = np.full(6, before_enable - 0.8)
    rig.arm.set_enabled(True, position=sagged)
    wait_for(lambda: len(rig.arm.commands) > count, 5.0, "commands after the torque-on")
    first = rig.arm.commands[count][1]
    np.testing.assert_allclose(first, sagged, atol=0.05 + 1e-9)  # from where the arm is, one step at most
    wait_for(lambda: len(rig.arm.commands) > count + 20, 10.0, "execution after the torque-on")
    steps = np.abs(np.diff([v[0] for _, v in rig.arm.commands[count:]]))
    assert steps.max() <= 0.05 + 1e-9


def test_deadman_holds_when_joint_states_stop(make_rig):
    rig = make_rig(latency=0.1, joint_state_timeout_s=0.2)
    wait_for(lambda: rig.executor_node.stats().executed_steps > 10, 15.0, "execution")
    rig.arm.publishing = False
    wait_for(lambda: "deadman" in rig.executor_node.stats().message, 15.0, "deadman")
    steps = rig.executor_node.stats().executed_steps
    time.sleep(0.3)
    assert rig.executor_node.stats().executed_steps == steps
    assert rig.executor_node.stats().actions_left == 0


def test_shadow_mode_publishes_no_commands(make_rig):
    rig = make_rig(latency=0.1, shadow=True)
    wait_for(lambda: rig.executor_node.stats().executed_steps > 30, 15.0, "shadow execution")
    wait_for(lambda: len(rig.arm.shadow) > 30, 15.0, "shadow commands")
    assert rig.arm.commands == []
    assert rig.arm.statuses[-1].shadow


def test_ticks_run_on_the_node_clock_under_use_sim_time(make_rig):
    rig = make_rig(latency=0.1, sim_time=True, max_step_rad=1.0)
    wait_for(lambda: len(rig.arm.commands) > 60, 30.0, "60 commands on simulated time")
    stamps = np.array([t for t, _ in rig.arm.commands])
    assert np.all((stamps > 1000.0) & (stamps < 1100.0)), "command stamps are not on the /clock time base"
    assert np.median(np.diff(stamps)) == pytest.approx(DT, abs=0.005)
    stats = rig.executor_node.stats()
    assert stats.executed_steps > 30 and stats.chunks_dropped == 0 and stats.idle_ticks == 0


def test_bad_parameters_fail_with_the_parameter_name():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ValueError, match="blend"):
            ExecutorNode(context=context, parameter_overrides=[Parameter("blend", value="median")])
        with pytest.raises(ValueError, match="joint_min_rad"):
            ExecutorNode(context=context, parameter_overrides=[Parameter("joint_min_rad", value=[0.0])])
        with pytest.raises(ValueError, match=r"'rate_hz': expected a number like 30\.0, got 'fast'"):
            ExecutorNode(context=context, parameter_overrides=[Parameter("rate_hz", value="fast")])
        node = ExecutorNode(context=context, parameter_overrides=[Parameter("rate_hz", value=50)])
        assert node.config.rate_hz == 50.0  # an integer is fine for a float parameter
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_live_parameters_change_while_running_and_the_others_are_refused_with_the_reason():
    """`ros2 param set /executor threshold 0.3` works; `rate_hz` shapes the timer and needs a restart."""
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = ExecutorNode(context=context)
        (result,) = node.set_parameters([Parameter("threshold", value=0.3)])
        assert result.successful and node.core.config.threshold == 0.3
        (result,) = node.set_parameters([Parameter("blend", value="crossfade")])
        assert result.successful and node.core.config.blend == "crossfade"
        (result,) = node.set_parameters([Parameter("task", value="stack the cups")])
        assert result.successful and node.params["task"] == "stack the cups"
        (result,) = node.set_parameters([Parameter("rate_hz", value=50.0)])
        assert not result.successful and "read at startup only" in result.reason
        (result,) = node.set_parameters([Parameter("threshold", value=1.5)])
        assert not result.successful and "'threshold'" in result.reason
        (result,) = node.set_parameters([Parameter("max_step_rad", value="big")])
        assert not result.successful and "'max_step_rad': expected a number" in result.reason
        assert node.core.config.threshold == 0.3 and node.config.rate_hz == 30.0  # refused: unchanged
        assert node.get_parameter("threshold").value == 0.3 and node.get_parameter("rate_hz").value == 30.0
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
