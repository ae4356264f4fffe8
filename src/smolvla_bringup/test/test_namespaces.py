"""Two complete simulated arm graphs side by side in one ROS domain, under the namespaces /left and /right.

Each graph is started the way the README tells a user with two arms: its own `smolvla-run sim --namespace
NS` process (MuJoCo arm with cameras, policy, executor, chunk visualizer), here with a tiny random checkpoint
and small camera images so that both fit on two CPU cores. One instruction per namespace drives each arm on
its own: the left arm moves on its instruction while the right one holds, then the right one follows its
own, nothing leaks into the root namespace, and both stop cleanly on Ctrl-C.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from runner_process import RunnerProcess
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from smolvla_msgs.msg import ActionChunk, PolicyStatus

NAMESPACES = ("left", "right")
TASKS = {"left": "pick up the red cube", "right": "push the cube to the left"}
NODES = ("arm", "policy", "executor", "chunk_visualizer")


class Watcher(Node):
    """Joint states, chunks and policy states of both namespaces, and anything on the root topics."""

    def __init__(self, context) -> None:
        super().__init__("namespace_watcher", context=context)
        self.lock = threading.Lock()
        self.states: dict[str, list[np.ndarray]] = {ns: [] for ns in ("", *NAMESPACES)}
        self.chunk_tasks: dict[str, list[str]] = {ns: [] for ns in ("", *NAMESPACES)}
        self.policy_state: dict[str, int] = {}
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.instruction = {
            ns: self.create_publisher(String, f"/{ns}/instruction", latched) for ns in NAMESPACES
        }
        for ns in ("", *NAMESPACES):
            prefix = f"/{ns}" if ns else ""
            self.create_subscription(
                JointState,
                f"{prefix}/joint_states",
                lambda m, ns=ns: self._state(ns, m),
                qos_profile_sensor_data,
            )
            self.create_subscription(
                ActionChunk, f"{prefix}/smolvla/action_chunk", lambda m, ns=ns: self._chunk(ns, m), 10
            )
        for ns in NAMESPACES:
            self.create_subscription(
                PolicyStatus, f"/{ns}/smolvla/policy_status", lambda m, ns=ns: self._policy(ns, m), 10
            )

    def _state(self, ns: str, msg: JointState) -> None:
        with self.lock:
            self.states[ns].append(np.array(msg.position))

    def _chunk(self, ns: str, msg: ActionChunk) -> None:
        with self.lock:
            self.chunk_tasks[ns].append(msg.task)

    def _policy(self, ns: str, msg: PolicyStatus) -> None:
        with self.lock:
            self.policy_state[ns] = msg.state

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(self):
                    return
            time.sleep(0.1)
        with self.lock:
            seen = {ns: len(s) for ns, s in self.states.items()}, self.chunk_tasks, self.policy_state
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; seen {seen}")

    def motion(self, ns: str, since: int) -> float:
        """The largest joint change of ``ns`` after its ``since``-th joint state."""
        with self.lock:
            states = np.array(self.states[ns][max(0, since - 1) :])
        return float(np.ptp(states, axis=0).max()) if len(states) > 1 else 0.0


@pytest.fixture
def two_arms(tiny_checkpoint_factory, tmp_path):
    checkpoint = tiny_checkpoint_factory(chunk_size=50, n_action_steps=50)  # 48x64 images: cheap renders
    overrides = {
        "/**/arm": {"ros__parameters": {"camera_width": 64, "camera_height": 48, "camera_fps": 10.0}},
        "/**/policy": {"ros__parameters": {"warmup": False}},
    }
    params = tmp_path / "small_cameras.yaml"
    params.write_text(yaml.safe_dump(overrides))
    context = rclpy.Context()
    rclpy.init(context=context)
    watcher = Watcher(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(watcher)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    graphs = {}
    try:
        for ns in NAMESPACES:
            args = ["sim", "--namespace", ns, "--checkpoint", str(checkpoint), "--params", str(params)]
            graphs[ns] = RunnerProcess(args)
        yield graphs, watcher
    finally:
        for graph in graphs.values():
            graph.stop()
        stop.set()
        spinner.join(timeout=5)
        executor.shutdown()
        watcher.destroy_node()
        rclpy.shutdown(context=context)


def _node_names(watcher: Watcher) -> set[str]:
    return {f"{ns.rstrip('/')}/{name}" for name, ns in watcher.get_node_names_and_namespaces()}


def test_two_namespaced_sim_graphs_follow_their_own_instructions(two_arms):
    graphs, watcher = two_arms
    try:
        _drive_each_arm_on_its_own(watcher)
    except AssertionError as err:
        logs = "\n".join(graph.tail() for graph in graphs.values())
        raise AssertionError(f"{err}\n{logs}") from None
    for ns, graph in graphs.items():
        rc = graph.stop()
        assert rc == 0, f"the {ns} graph did not exit cleanly on Ctrl-C (rc {rc})\n{graph.tail()}"
        assert "Traceback" not in graph.log, graph.tail()
        received = f"policy: instruction received: '{TASKS[ns]}'"
        assert any(line.startswith(received) for line in graph.lines()), graph.tail()


def _drive_each_arm_on_its_own(watcher: Watcher) -> None:
    watcher.wait_for(
        lambda w: all(len(w.states[ns]) > 20 for ns in NAMESPACES), 90, "both arms' joint states"
    )
    expected = {f"/{ns}/{name}" for ns in NAMESPACES for name in NODES}
    watcher.wait_for(lambda w: expected <= _node_names(w), 30, f"the nodes {sorted(expected)}")
    nodes = _node_names(watcher)
    assert not {f"/{name}" for name in NODES} & nodes, f"a graph node in the root namespace: {sorted(nodes)}"
    ready = PolicyStatus.STATE_READY
    watcher.wait_for(
        lambda w: all(w.policy_state.get(ns) == ready for ns in NAMESPACES), 180, "both policies"
    )

    start = {ns: len(watcher.states[ns]) for ns in NAMESPACES}
    watcher.instruction["left"].publish(String(data=TASKS["left"]))
    watcher.wait_for(lambda w: len(w.chunk_tasks["left"]) >= 3, 60, "chunks for the left instruction")
    time.sleep(2.0)
    assert watcher.motion("left", start["left"]) > 0.02, "the left arm did not move on its instruction"
    assert watcher.motion("right", start["right"]) < 0.01, "the right arm moved without an instruction"
    assert not watcher.chunk_tasks["right"], "the right policy answered without an instruction"

    start_right = len(watcher.states["right"])
    watcher.instruction["right"].publish(String(data=TASKS["right"]))
    watcher.wait_for(lambda w: len(w.chunk_tasks["right"]) >= 3, 60, "chunks for the right instruction")
    time.sleep(2.0)
    assert watcher.motion("right", start_right) > 0.02, "the right arm did not move on its instruction"
    with watcher.lock:
        assert set(watcher.chunk_tasks["left"]) == {TASKS["left"]}
        assert set(watcher.chunk_tasks["right"]) == {TASKS["right"]}
        assert not watcher.states[""] and not watcher.chunk_tasks[""], (
            "a graph published in the root namespace"
        )
