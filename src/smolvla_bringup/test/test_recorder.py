"""The episode recorder over real DDS: a fake robot publishes, services start/stop/mark episodes, and the
bags it writes are read back with rosbags and fed to the evaluator and the dataset exporter."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

import synthetic_bags
from smolvla_common import bags, recorder_node
from smolvla_common.image_conversion import rgb_to_image_msg
from smolvla_common.joints import SO101_JOINTS
from smolvla_common.recorder_node import RecorderNode, episode_cli
from smolvla_policy.dataset import ExportSettings, export_dataset
from smolvla_policy.evaluation import EvalSettings, GroundTruthPolicy, evaluate_bag, read_ground_truth


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Robot(Node):
    """Publishes joint states, commands (30 Hz, best effort like a driver) and camera images (15 Hz)."""

    def __init__(self, context):
        super().__init__("fake_robot", context=context)
        self.state_pub = self.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
        self.command_pub = self.create_publisher(JointTrajectory, "/joint_commands", 10)
        self.image_pub = self.create_publisher(Image, "/cameras/top/image_raw", qos_profile_sensor_data)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.instruction_pub = self.create_publisher(String, "/instruction", latched)
        self.start = time.monotonic()
        self.ticks = 0
        self.create_timer(1 / 30, self._tick)

    def _tick(self) -> None:
        t = time.monotonic() - self.start
        stamp = self.get_clock().now().to_msg()
        q = synthetic_bags.synthetic_command(t)
        state = JointState(name=list(SO101_JOINTS), position=q.tolist())
        state.header.stamp = stamp
        self.state_pub.publish(state)
        command = JointTrajectory(joint_names=list(SO101_JOINTS))
        command.header.stamp = stamp
        command.points = [JointTrajectoryPoint(positions=q.tolist())]
        self.command_pub.publish(command)
        if self.ticks % 2 == 0:
            self.image_pub.publish(rgb_to_image_msg(synthetic_bags.synthetic_image(t, 0), stamp))
        self.ticks += 1


@pytest.fixture
def rig(tmp_path):
    context = rclpy.Context()
    rclpy.init(context=context)
    robot = Robot(context)
    robot.instruction_pub.publish(String(data="stack the blocks"))  # latched before the recorder starts
    recorder = RecorderNode(
        context=context,
        parameter_overrides=[
            Parameter("output_dir", value=str(tmp_path / "recordings")),
            Parameter("cameras", value=["top"]),
        ],
    )
    client = Node("operator", context=context)
    executor = SingleThreadedExecutor(context=context)
    for node in (robot, recorder, client):
        executor.add_node(node)
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    yield robot, recorder, client
    stop.set()
    thread.join(timeout=5)
    executor.shutdown()
    for node in (robot, recorder, client):
        node.destroy_node()
    rclpy.shutdown(context=context)


def call(client: Node, service_type, name: str, request):
    cli = client.create_client(service_type, name)
    assert cli.wait_for_service(timeout_sec=20.0), f"service {name} not available"
    future = cli.call_async(request)
    wait_for(future.done, 20.0, f"{name} response")
    client.destroy_client(cli)
    return future.result()


def test_episodes_are_recorded_with_metadata_and_evaluate(rig, tmp_path):
    _robot, recorder, client = rig
    wait_for(
        lambda: len(recorder.subscribed) >= 4 and recorder.instruction is not None, 10.0, "subscriptions"
    )
    assert call(client, Trigger, "/recorder/stop_episode", Trigger.Request()).success is False
    started = call(client, Trigger, "/recorder/start_episode", Trigger.Request())
    assert started.success, started.message
    assert not call(client, Trigger, "/recorder/start_episode", Trigger.Request()).success  # one at a time
    episode = recorder.episode
    wait_for(
        lambda: (
            episode.counts.get("/joint_states", 0) >= 30
            and episode.counts.get("/cameras/top/image_raw", 0) >= 15
        ),
        30.0,
        "30 joint states and 15 images recorded",
    )
    assert call(client, SetBool, "/recorder/mark_success", SetBool.Request(data=True)).success
    stopped = call(client, Trigger, "/recorder/stop_episode", Trigger.Request())
    assert stopped.success and stopped.message == started.message
    # A second episode, judged a failure after it ended.
    second = call(client, Trigger, "/recorder/start_episode", Trigger.Request())
    episode = recorder.episode
    wait_for(lambda: episode.counts.get("/joint_states", 0) >= 5, 30.0, "a few joint states in episode 2")
    call(client, Trigger, "/recorder/stop_episode", Trigger.Request())
    assert call(client, SetBool, "/recorder/mark_success", SetBool.Request(data=False)).success

    first_bag = tmp_path / "recordings" / "episode_0000"
    assert started.message == str(first_bag) and second.message.endswith("episode_0001")
    meta = json.loads((first_bag / "episode.json").read_text())
    assert meta["task"] == "stack the blocks" and meta["success"] is True
    assert (
        json.loads((tmp_path / "recordings" / "episode_0001" / "episode.json").read_text())["success"]
        is False
    )
    with bags.BagReader(first_bag) as bag:
        assert bag.storage == "mcap"
        assert bag.topics["/cameras/top/image_raw"] == bags.IMAGE
        assert bag.message_count("/joint_states") >= 30 and bag.message_count("/cameras/top/image_raw") >= 15
        assert meta["message_counts"]["/joint_states"] == bag.message_count("/joint_states")
        assert [m.msg.data for m in bag.messages(["/instruction"])] == ["stack the blocks"]
        images = [m.msg for m in bag.messages(["/cameras/top/image_raw"])]
        assert images[0].height == 48 and images[0].encoding == "rgb8"
        truth = read_ground_truth(bag, "/joint_commands", SO101_JOINTS)
    # The recording evaluates: replaying its own commands scores zero.
    result = evaluate_bag(
        first_bag,
        GroundTruthPolicy(truth, 1 / 30, 10),
        EvalSettings({"top": "/cameras/top/image_raw"}, stride=3),
        progress=False,
    )
    assert len(result.records) >= 5 and result.metrics["mae"]["all"] == pytest.approx(0.0, abs=1e-9)
    # Recorded joint states are the published ones (radians, unchanged by the raw recording path).
    assert np.all(np.abs(truth.positions) < 2)
    # ... and exports: the task comes from the episode metadata, frames from the recorded camera.
    dataset = export_dataset(
        [first_bag],
        tmp_path / "dataset",
        ExportSettings({"top": "/cameras/top/image_raw"}, units="radians", vcodec="libx264"),
    )
    info = json.loads((dataset / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 1 and info["total_frames"] >= 20
    # The command-line client (for installs without ros2cli) drives the same services.
    assert episode_cli(["start", "--timeout", "20"]) == 0
    assert recorder.episode is not None and recorder.episode.path.name == "episode_0002"
    assert episode_cli(["failure", "--timeout", "20"]) == 0
    assert episode_cli(["stop", "--timeout", "20"]) == 0
    assert episode_cli(["stop", "--timeout", "20"]) == 1  # nothing recording: refused, not crashed
    assert (
        json.loads((tmp_path / "recordings" / "episode_0002" / "episode.json").read_text())["success"]
        is False
    )


def drop_next_answer(recorder: RecorderNode, service_name: str) -> list[str]:
    """Make the recorder's ``service_name`` handle its next request but lose the answer, as Fast DDS does
    when the server has not discovered a new client's reply reader yet; returns the lost messages."""
    service = next(s for s in recorder.services if s.srv_name.endswith(service_name))
    lost: list[str] = []

    def send_or_lose(response, header) -> None:
        if not lost:
            lost.append(response.message)
            return
        type(service).send_response(service, response, header)

    service.send_response = send_or_lose
    return lost


def test_the_cli_tells_the_outcome_when_the_answer_is_lost(rig, tmp_path, monkeypatch, capsys):
    _, recorder, _ = rig
    monkeypatch.setattr(recorder_node, "RESEND_S", 0.3)
    lost = drop_next_answer(recorder, "/start_episode")
    assert (
        episode_cli(["start", "--timeout", "20"]) == 0
    )  # the repeat was refused; the status shows it started
    wait_for(lambda: lost, 5.0, "the lost answer")  # the CLI may read the status before the answer is lost
    assert recorder.episode is not None and recorder.episode_index == 1  # one episode, not two
    assert capsys.readouterr().out.strip().endswith("episode_0000")
    lost = drop_next_answer(recorder, "/mark_success")
    assert episode_cli(["success", "--timeout", "20"]) == 0 and lost  # idempotent: simply asked again
    assert recorder.episode.metadata["success"] is True
    lost = drop_next_answer(recorder, "/stop_episode")
    assert episode_cli(["stop", "--timeout", "20"]) == 0
    wait_for(lambda: lost, 5.0, "the lost answer")
    assert recorder.episode is None and capsys.readouterr().out.strip().endswith("episode_0000")
    assert json.loads((tmp_path / "recordings" / "episode_0000" / "episode.json").read_text())["success"]
    lost = drop_next_answer(recorder, "/stop_episode")
    assert episode_cli(["stop", "--timeout", "20"]) == 1 and lost == ["no episode is recording"]
    assert capsys.readouterr().out.strip() == "no episode is recording"
    assert not (tmp_path / "recordings" / "episode_0001").exists()
