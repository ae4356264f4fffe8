"""`smolvla-ctl` over real DDS: the real executor node, a fake arm (latched ArmStatus, ``arm/torque``) and a
fake policy (PolicyStatus, latched instruction listener), in the root namespace and in ``/left``; and the
nothing-answers case, where every command names the node, the topic or service and how to start it.
"""

from __future__ import annotations

import time

import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import String
from std_srvs.srv import SetBool

from smolvla_bringup import ctl, runner
from smolvla_bringup.instruct import latched_qos
from smolvla_common.arm_status import arm_status_msg
from smolvla_common.executor_core import State
from smolvla_common.executor_node import ExecutorNode
from smolvla_common.qos import LATCHED, RELIABLE
from smolvla_common.timeutil import duration_msg
from smolvla_msgs.msg import ArmStatus, PolicyStatus


class FakeArm(Node):
    """Latches ``arm/status`` (enabled, epoch 2) and answers ``arm/torque`` with ``torque_answer``."""

    def __init__(self, context, namespace: str) -> None:
        super().__init__("arm", context=context, namespace=namespace)
        self.torque_answer = True
        self.torque_calls: list[bool] = []
        self.enabled_since = self.get_clock().now().nanoseconds * 1e-9 - 5.0
        self.status_pub = self.create_publisher(ArmStatus, "~/status", LATCHED)
        self.status_pub.publish(
            arm_status_msg(self.get_clock().now().to_msg(), "enabled", 2, self.enabled_since, "torque on")
        )
        self.create_service(SetBool, "~/torque", self._on_torque)

    def _on_torque(self, request, response):
        self.torque_calls.append(request.data)
        response.success = self.torque_answer
        response.message = "torque disabled" if self.torque_answer else "servo 3 did not acknowledge"
        return response


class FakePolicy(Node):
    """Publishes a READY PolicyStatus every 0.2 s and records latched instructions."""

    def __init__(self, context, namespace: str) -> None:
        super().__init__("policy", context=context, namespace=namespace)
        self.instructions: list[str] = []
        self.status_pub = self.create_publisher(PolicyStatus, "smolvla/policy_status", RELIABLE)
        self.create_subscription(String, "instruction", self._on_instruction, latched_qos())
        self.create_timer(0.2, self._publish)

    def _on_instruction(self, msg: String) -> None:
        self.instructions.append(msg.data)

    def _publish(self) -> None:
        msg = PolicyStatus(state=PolicyStatus.STATE_READY, message="chunk 4 published", device="cpu/float32")
        msg.policy_id, msg.task, msg.chunks_published = "tiny", "pick up the cube", 4
        msg.last_inference_latency = duration_msg(0.21)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(msg)


@pytest.fixture
def graph_in():
    """Start executor + fake arm + fake policy in a namespace ('' = root), each spun on its own thread."""
    runs = []

    def start(namespace: str = ""):
        run = runner.Runner([], [])
        run.start()
        runs.append(run)
        executor = ExecutorNode(
            context=run.context,
            namespace=namespace or "/",
            parameter_overrides=[Parameter("status_rate_hz", value=20.0)],
        )
        arm, policy = FakeArm(run.context, namespace or "/"), FakePolicy(run.context, namespace or "/")
        for node in (executor, arm, policy):
            run.add_node(node)
        return executor, arm, policy

    yield start
    for run in runs:
        run.shutdown()


def ctl_main(capsys, *argv: str) -> tuple[int, str, str]:
    rc = ctl.main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_every_command_and_the_status_in_plain_words(graph_in, capsys):
    executor, arm, policy = graph_in()
    rc, out, err = ctl_main(capsys, "status")
    assert rc == 0, out + err
    since = time.strftime("%H:%M:%S", time.localtime(arm.enabled_since))
    assert f"arm: enabled since {since} (epoch 2)" in out
    assert "policy: ready (model loaded, cpu/float32), 4 chunks published, inference 0.21 s" in out
    assert "task 'pick up the cube'" in out
    assert "executor: stopped async, 0 chunks received, 0 actions left (0.00 s)" in out

    active = {State.RUNNING, State.HOLDING}  # holding: no joint states in this test
    for command, states in (("start", active), ("pause", {State.PAUSED}), ("resume", active)):
        rc, out, err = ctl_main(capsys, command)
        assert rc == 0, err
        assert executor.stats().state in states, (command, executor.stats())
    assert "smolvla-ctl: resume: resumed after" in out
    rc, out, _ = ctl_main(capsys, "stop")
    assert rc == 0 and "smolvla-ctl: stop: stopped" in out
    assert executor.stats().state == State.STOPPED

    rc, out, _ = ctl_main(capsys, "estop")
    assert rc == 0 and "torque disable ok (torque disabled)" in out
    assert arm.torque_calls == [False]
    arm.torque_answer = False
    rc, out, err = ctl_main(capsys, "estop")
    assert rc == 1, out
    assert "smolvla-ctl: estop FAILED: E-STOP" in err and "servo 3 did not acknowledge" in err

    rc, out, err = ctl_main(capsys, "instruct", "pick up the red cube")
    assert rc == 0, err
    assert "'pick up the red cube' -> /instruction" in out
    deadline = time.monotonic() + 5
    while not policy.instructions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert policy.instructions == ["pick up the red cube"]


def test_a_graph_in_a_namespace_needs_the_namespace(graph_in, capsys):
    executor, _, policy = graph_in("/left")
    rc, out, err = ctl_main(capsys, "--namespace", "left", "start")
    assert rc == 0, err
    assert executor.stats().state != State.STOPPED
    rc, out, err = ctl_main(capsys, "--namespace", "left", "status")
    assert rc == 0, out + err
    assert "arm: enabled since" in out and "executor: holding async" in out

    rc, out, err = ctl_main(capsys, "--timeout", "1", "stop")  # the root namespace has no executor
    assert rc == 2
    assert "/executor/stop (std_srvs/srv/Trigger)" in err and "--namespace NS" in err
    assert executor.stats().state != State.STOPPED
    rc, _, err = ctl_main(capsys, "--namespace", "left", "instruct", "wave")
    assert rc == 0, err
    assert policy.instructions == ["wave"]
    rc, out, _ = ctl_main(capsys, "--namespace", "right", "--timeout", "0.5", "status")
    assert rc == 2
    assert "executor node on /right/smolvla/executor_status" in out and "in the namespace /right" in out
    assert "`smolvla-run sim|real|robot --namespace right`" in out


def test_nothing_answers(capsys):
    rc, _, err = ctl_main(capsys, "--timeout", "0.5", "estop")
    assert rc == 2
    assert "no answer from the executor node on /executor/estop (std_srvs/srv/Trigger) within 0.5 s" in err
    assert "smolvla-run sim|real|robot" in err
    rc, out, _ = ctl_main(capsys, "--timeout", "0.5", "status")
    assert rc == 2
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["arm", "policy", "executor"]
    assert "no answer from the arm node on /arm/status (smolvla_msgs/msg/ArmStatus)" in lines[0]
    assert "policy node on /smolvla/policy_status" in lines[1] and "smolvla-run sim|real|policy" in lines[1]
    rc, _, err = ctl_main(capsys, "--timeout", "0.5", "instruct", "pick up the cube")
    assert rc == 2 and "no subscriber on /instruction" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fly"], "invalid choice"),
        (["instruct"], "the instruction is empty"),
        (["stop", "now"], "stop takes no text"),
        (["--namespace", "1left", "status"], "namespace '1left'"),
        (["--timeout", "0", "status"], "--timeout must be > 0"),
    ],
)
def test_bad_usage_exits_2_without_touching_ros(capsys, argv, message):
    rc, _, err = ctl_main(capsys, *argv)
    assert rc == 2
    assert message in err


def test_a_command_whose_answer_was_dropped_is_sent_again(monkeypatch):
    """Fast DDS may drop a service response to a client it has not discovered yet ("failed to send
    response (timeout)"); that cannot be produced on demand, so a stand-in client drops the first answer."""
    from types import SimpleNamespace

    from rclpy.task import Future

    class DroppingClient:
        def __init__(self) -> None:
            self.calls = 0

        def call_async(self, request):
            self.calls += 1
            future = Future()
            if self.calls > 1:
                future.set_result(SimpleNamespace(success=True, message=f"answer to call {self.calls}"))
            return future

    monkeypatch.setattr(ctl, "RESEND_S", 0.2)
    client = DroppingClient()
    console = SimpleNamespace(timeout=5.0)
    response = ctl.Console._call_until_answered(console, client, object())
    assert response.message == "answer to call 2" and client.calls == 2
    silent = SimpleNamespace(call_async=lambda request: Future())
    started = time.monotonic()
    assert ctl.Console._call_until_answered(SimpleNamespace(timeout=0.5), silent, object()) is None
    assert time.monotonic() - started < 2.0
