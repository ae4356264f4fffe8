"""The simulated arm node over real DDS: the same topics, types, QoS and services as the real arm and cameras.

Real rclpy nodes in one process (a probe node talks to the sim node through DDS), real MuJoCo physics and
real offscreen rendering.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import defaultdict

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from smolvla_common.qos import LATCHED
from so100_driver.sim.expert import HOME, GraspIK, plan_pick
from so100_driver.sim.scene import JOINT_NAMES
from so100_driver.sim.task import placements
from so100_driver.sim_node import ParameterError, SimArmNode


@pytest.fixture
def ros():
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    nodes = []
    spinner = threading.Thread(target=executor.spin, daemon=True)

    def add(node):
        nodes.append(node)
        executor.add_node(node)
        return node

    add.context = context
    spinner.start()
    yield add
    executor.shutdown(timeout_sec=5.0)
    spinner.join(timeout=5.0)  # the spinner is out of every callback before the nodes go away
    assert not spinner.is_alive()
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown(context=context)
    leftovers = [t.name for t in threading.enumerate() if t.name.startswith("sim-")]
    assert not leftovers, f"simulation threads still running: {leftovers}"


class Probe:
    """Subscribes to everything the sim publishes and keeps the messages."""

    def __init__(self, ros, cameras=("top", "wrist")):
        self.node = ros(rclpy.create_node("probe", context=ros.context))
        self.messages: dict[str, list] = defaultdict(list)
        self.lock = threading.Lock()
        subscriptions = [
            (JointState, "/joint_states", 10),
            (DiagnosticArray, "/diagnostics", 10),
            (Clock, "/clock", 10),
        ]
        subscriptions += [(Image, f"/cameras/{name}/image_raw", qos_profile_sensor_data) for name in cameras]
        for msg_type, topic, qos in subscriptions:
            self.node.create_subscription(
                msg_type, topic, lambda msg, topic=topic: self._keep(topic, msg), qos
            )
        self.commands = self.node.create_publisher(JointTrajectory, "/joint_commands", 10)
        self.torque = self.node.create_client(SetBool, "/arm/torque")

    def _keep(self, topic, msg):
        with self.lock:
            self.messages[topic].append(msg)

    def wait_for(self, predicate, timeout=10.0, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(self.messages):
                    return
            time.sleep(0.05)
        with self.lock:
            counts = {topic: len(msgs) for topic, msgs in self.messages.items()}
        raise AssertionError(f"timed out waiting for {what}; received {counts}")

    def latest(self, topic):
        with self.lock:
            return self.messages[topic][-1]

    def send(self, names, points, stamped=True):
        msg = JointTrajectory(joint_names=list(names))
        if stamped:
            msg.header.stamp = self.node.get_clock().now().to_msg()
        for seconds, positions in points:
            whole = int(seconds)
            msg.points.append(
                JointTrajectoryPoint(
                    positions=[float(v) for v in positions],
                    time_from_start=Duration(sec=whole, nanosec=round((seconds - whole) * 1e9)),
                )
            )
        self.commands.publish(msg)

    def set_torque(self, enabled: bool) -> SetBool.Response:
        assert self.torque.wait_for_service(timeout_sec=5.0), "/arm/torque service not found"
        future = self.torque.call_async(SetBool.Request(data=enabled))
        deadline = time.monotonic() + 5.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        return future.result()


def sim_node(ros, **overrides) -> SimArmNode:
    parameters = [Parameter("camera_width", value=96), Parameter("camera_height", value=64)]
    parameters += [Parameter(name, value=value) for name, value in overrides.items()]
    return ros(SimArmNode(context=ros.context, parameter_overrides=parameters))


def position(state: JointState, joint: str) -> float:
    return state.position[state.name.index(joint)]


def test_trajectory_moves_the_arm_and_cameras_stream(ros):
    probe = Probe(ros)
    sim = sim_node(ros, camera_fps=10, control_rate_hz=100)  # ints work for float parameters (YAML style)
    probe.wait_for(
        lambda m: m["/joint_states"] and m["/cameras/top/image_raw"] and m["/cameras/wrist/image_raw"],
        what="first joint state and camera images",
    )
    first = probe.latest("/joint_states")
    assert first.name == list(JOINT_NAMES)
    assert len(first.velocity) == 6 and len(first.effort) == 6
    first_top = bytes(probe.latest("/cameras/top/image_raw").data)

    probe.send(["shoulder_pan", "gripper"], [(0.5, [0.4, 0.5]), (1.0, [0.8, 1.0])])
    probe.wait_for(
        lambda m: (
            abs(position(m["/joint_states"][-1], "shoulder_pan") - 0.8) < 0.05
            and abs(position(m["/joint_states"][-1], "gripper") - 1.0) < 0.1
        ),
        what="the arm to reach the commanded pose",
    )
    state = probe.latest("/joint_states")
    assert abs(position(state, "elbow_flex")) < 0.05  # joints the command did not name held still
    time.sleep(0.3)
    for name in ("top", "wrist"):
        image = probe.latest(f"/cameras/{name}/image_raw")
        assert (image.width, image.height, image.encoding, image.step) == (96, 64, "rgb8", 96 * 3)
        assert image.header.frame_id == f"{name}_optical_frame"
        assert len(set(bytes(image.data))) > 20, f"{name} image is blank"
    assert bytes(probe.latest("/cameras/top/image_raw").data) != first_top, "top image did not follow the arm"
    # Stamps come from the node clock: consistent between joint states and images, close to now.
    now = sim.get_clock().now().nanoseconds * 1e-9
    for topic in ("/joint_states", "/cameras/top/image_raw"):
        stamp = probe.latest(topic).header.stamp
        assert -1.0 < now - (stamp.sec + stamp.nanosec * 1e-9) < 1.0
    probe.wait_for(lambda m: m["/diagnostics"], what="diagnostics")
    names = {status.name for status in probe.latest("/diagnostics").status}
    assert {"arm: simulation", "arm: camera top", "arm: camera wrist"} <= names


def test_bad_commands_are_rejected_and_torque_service_works(ros):
    probe = Probe(ros)
    sim = sim_node(ros, cameras=["top"], camera_fps=5.0)
    probe.wait_for(lambda m: m["/joint_states"], what="joint states")
    probe.send(["shoulder_pan"], [(0.1, [math.nan])])
    probe.send(["elbow"], [(0.1, [0.3])])
    probe.send(["shoulder_pan"], [(0.2, [5.0])])  # far out of range: clamped, never beyond the limit
    time.sleep(1.0)
    assert sim.commands.rejected == 2
    assert "unknown joint name(s) ['elbow']" in sim.commands.last_rejection  # the NaN one was rejected before
    pan = position(probe.latest("/joint_states"), "shoulder_pan")
    assert math.isfinite(pan) and 0.5 < pan <= 1.9199 + 0.02

    response = probe.set_torque(False)
    assert response.success
    probe.send(["shoulder_pan"], [(0.1, [0.0])])
    time.sleep(0.3)
    assert "enable torque first" in sim.commands.last_rejection
    issued_before = probe.node.get_clock().now()
    response = probe.set_torque(True)
    assert response.success and sim.arm.torque_enabled
    assert probe.set_torque(True).message == "torque already enabled"
    msg = JointTrajectory(joint_names=["shoulder_pan"])  # a command issued before the torque-on: ignored
    msg.header.stamp = issued_before.to_msg()
    msg.points = [JointTrajectoryPoint(positions=[0.0])]
    probe.commands.publish(msg)
    probe.send(["shoulder_pan"], [(0.1, [0.0])], stamped=False)  # unstamped: refused too
    time.sleep(0.3)
    assert "header.stamp is not set" in sim.commands.last_rejection
    assert sim.commands.rejected == 5
    assert abs(position(probe.latest("/joint_states"), "shoulder_pan")) > 0.4  # nothing moved
    probe.send(["shoulder_pan"], [(0.2, [0.0])])
    probe.wait_for(
        lambda m: abs(position(m["/joint_states"][-1], "shoulder_pan")) < 0.05, what="the arm to return"
    )


def test_reset_cube_draws_seeded_positions_within_the_noise(ros):
    probe = Probe(ros, cameras=("top",))
    sim = sim_node(ros, cameras=["top"], camera_fps=5.0, cube_position_noise=0.05, seed=3)
    probe.wait_for(lambda m: m["/joint_states"], what="joint states")
    first = sim.arm.cube_position()
    client = probe.node.create_client(Trigger, "/arm/reset_cube")
    assert client.wait_for_service(timeout_sec=5.0)
    future = client.call_async(Trigger.Request())
    deadline = time.monotonic() + 5.0
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert future.result().success and "cube placed at" in future.result().message
    second = sim.arm.cube_position()
    assert not np.allclose(first[:2], second[:2])
    for position in (first, second):
        assert np.all(np.abs(position[:2] - [0.24, 0.08]) <= 0.05 + 1e-3)
        assert abs(position[2] - 0.015) < 0.003  # resting on the table
    # The same seed gives the same first position (reproducible episodes).
    again = np.random.default_rng(3).uniform(-0.05, 0.05, 2) + np.array([0.24, 0.08])
    np.testing.assert_allclose(first[:2], again, atol=2e-3)


def test_publish_clock_stamps_with_simulated_time(ros):
    probe = Probe(ros, cameras=("top",))
    sim_node(ros, cameras=["top"], camera_fps=5.0, publish_clock=True)
    probe.wait_for(
        lambda m: len(m["/clock"]) > 20 and m["/cameras/top/image_raw"], what="/clock and an image"
    )
    clocks = [c.clock.sec + c.clock.nanosec * 1e-9 for c in probe.messages["/clock"]]
    assert all(b >= a for a, b in itertools.pairwise(clocks))
    image_stamp = probe.latest("/cameras/top/image_raw").header.stamp
    assert clocks[0] - 1.0 <= image_stamp.sec + image_stamp.nanosec * 1e-9 <= clocks[-1] + 0.5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cameras": ["top", "nose"]}, "'cameras': expected names among"),
        ({"camera_fps": 0.0}, "'camera_fps': expected a value > 0, got 0.0"),
        ({"initial_positions": [0.0, 0.0]}, "'initial_positions': expected 6 finite numbers"),
        ({"joint_names": ["a", "b"]}, "'joint_names': expected each of"),
        ({"realtime_factor": -1.0}, "'realtime_factor'"),
        ({"cube_position": [0.2]}, "'cube_position': expected 2 finite numbers"),
        ({"camera_fps": "fast"}, "'camera_fps': expected a number like 15.0, got 'fast'"),
        ({"cameras": [1, 2]}, "'cameras': expected a string, got 1"),
        ({"task_region": [0.3, 0.2, 0.0, 0.1]}, "invalid task parameter: x_range"),
        ({"task_hold_s": -1.0}, "'task_hold_s': expected a value >= 0"),
    ],
)
def test_bad_parameters_name_the_parameter(ros, overrides, message):
    parameters = [Parameter(name, value=value) for name, value in overrides.items()]
    with pytest.raises(ParameterError, match=message):
        SimArmNode(context=ros.context, parameter_overrides=parameters)


def call(probe, service: str) -> Trigger.Response:
    client = probe.node.create_client(Trigger, service)
    assert client.wait_for_service(timeout_sec=5.0), f"{service} not found"
    future = client.call_async(Trigger.Request())
    deadline = time.monotonic() + 5.0
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    return future.result()


def task_values(diagnostics: DiagnosticArray) -> dict[str, str]:
    status = next(s for s in diagnostics.status if s.name == "arm: task")
    return {kv.key: kv.value for kv in status.values}


def test_task_episodes_are_seeded_and_success_is_published(ros):
    """The expert's plan as one trajectory: the cube lifted and held is a success, a reset clears it."""
    probe = Probe(ros, cameras=("top",))
    successes = []
    probe.node.create_subscription(Bool, "/arm/task_success", successes.append, LATCHED)
    sim = sim_node(ros, cameras=["top"], camera_fps=2.0, task_seed=5, initial_positions=HOME.tolist())
    first, second = placements(5, 2)
    np.testing.assert_allclose(sim.arm.cube_position()[:2], [first.x, first.y], atol=1e-3)
    probe.wait_for(lambda m: m["/joint_states"] and successes, what="joint states and task_success")
    assert successes[-1].data is False
    plan = plan_pick(GraspIK(sim.arm.model), first, float(sim.arm.cube_position()[2]))
    probe.send(JOINT_NAMES, list(zip(plan.times, plan.targets, strict=True)))
    probe.wait_for(lambda m: successes[-1].data, timeout=plan.duration + 10.0, what="task success")
    probe.wait_for(lambda m: task_values(m["/diagnostics"][-1])["success"] == "True", what="task diagnostics")
    values = task_values(probe.latest("/diagnostics"))
    assert values["episode"] == "1" and float(values["lift_m"]) > 0.03, values
    response = call(probe, "/arm/reset_episode")
    assert response.success and "episode 2" in response.message, response.message
    probe.wait_for(lambda m: successes[-1].data is False, what="success cleared by the reset")
    np.testing.assert_allclose(sim.arm.cube_position()[:2], [second.x, second.y], atol=1e-3)
