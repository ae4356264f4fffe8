"""`smolvla-ctl start|stop|estop|pause|resume|status|instruct "..."`: the operator's console, without ros2cli.

Plain rclpy, so it works with the PyPI wheels (`make setup`) and with a full ROS 2 install alike. It calls
the executor's services (``executor/start``, ``executor/stop``, ``executor/estop``: std_srvs/Trigger;
``executor/pause``: std_srvs/SetBool, true for pause and false for resume), publishes a latched instruction
(like `smolvla-instruct`), or prints the arm's, the policy's and the executor's state in plain words.
``--namespace NS`` talks to a graph started with ``smolvla-run ... --namespace NS``.

Exit codes: 0 done, 1 the service answered with a failure (its message is printed, e.g. an e-stop whose
torque-off the arm did not confirm), 2 nothing answered (the message names the node, the topic or service
and how to start it) or a bad command line.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass

from smolvla_bringup import graph, instruct, status_text

#: command -> (service, type, request data for SetBool or None for Trigger)
SERVICES = {
    "start": ("executor/start", "Trigger", None),
    "stop": ("executor/stop", "Trigger", None),
    "estop": ("executor/estop", "Trigger", None),
    "pause": ("executor/pause", "SetBool", True),
    "resume": ("executor/pause", "SetBool", False),
}
#: Seconds after which an unanswered command is sent again (see ``Console._call_until_answered``).
RESEND_S = 1.5
HOW_TO_START = {
    "executor": "smolvla-run sim|real|robot",
    "policy": "smolvla-run sim|real|policy",
    "arm": "smolvla-run sim|real|robot",
}


@dataclass(frozen=True)
class StatusTopic:
    node: str
    topic: str
    type_name: str


STATUS_TOPICS = (
    StatusTopic("arm", "arm/status", "ArmStatus"),
    StatusTopic("policy", "smolvla/policy_status", "PolicyStatus"),
    StatusTopic("executor", "smolvla/executor_status", "ExecutorStatus"),
)


class CtlError(Exception):
    """Nothing answered, or a bad argument: exit code 2 with this message."""


def full_name(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def nobody_text(node: str, what: str, namespace: str, timeout: float) -> str:
    """Nothing answered on ``what`` (a topic or service): which node should, and how to start it."""
    where = f" in the namespace {namespace}" if namespace else ""
    start = HOW_TO_START[node] + (f" --namespace {namespace.strip('/')}" if namespace else "")
    hint = "" if namespace else "; a graph started with --namespace NS needs --namespace NS here too"
    return (
        f"no answer from the {node} node on {what} within {timeout:g} s: is it running{where} on "
        f"ROS_DOMAIN_ID {os.environ.get('ROS_DOMAIN_ID', '0')}? Start it with `{start}` (full ROS 2 "
        f"install: ros2 launch smolvla_bringup <graph>.launch.py){hint}"
    )


class Console:
    """One rclpy node in its own context, spun on a thread while a command runs."""

    def __init__(self, namespace: str, timeout: float) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.namespace, self.timeout = namespace, timeout
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(
            f"smolvla_ctl_{os.getpid()}", context=self.context, start_parameter_services=False
        )
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)

    def call(self, command: str) -> tuple[bool, str]:
        """Call the executor service of ``command``; (success, message) or CtlError when nothing answers."""
        from std_srvs.srv import SetBool, Trigger

        service, type_name, data = SERVICES[command]
        name = full_name(self.namespace, service)
        srv_type = SetBool if type_name == "SetBool" else Trigger
        client = self.node.create_client(srv_type, name)
        what = f"{name} (std_srvs/srv/{type_name})"
        if not client.wait_for_service(timeout_sec=self.timeout):
            raise CtlError(nobody_text("executor", what, self.namespace, self.timeout))
        request = SetBool.Request(data=data) if data is not None else Trigger.Request()
        response = self._call_until_answered(client, request)
        if response is None:
            raise CtlError(f"{what} did not answer within {self.timeout:g} s (the executor may be busy)")
        return response.success, response.message

    def _call_until_answered(self, client, request):
        """The first response to ``request``, re-sent every RESEND_S until ``timeout``; None without one.

        A server can drop its response when it has not yet discovered a new client's reply reader (Fast
        DDS: "failed to send response (timeout)"); every executor command is idempotent, so asking again
        is safe.
        """
        deadline = time.monotonic() + self.timeout
        futures = []
        while time.monotonic() < deadline:
            futures.append(client.call_async(request))
            resend_at = min(deadline, time.monotonic() + RESEND_S)
            while time.monotonic() < resend_at:
                answered = next((future for future in futures if future.done()), None)
                if answered is not None:
                    return answered.result()
                time.sleep(0.01)
        return None

    def status(self) -> tuple[list[str], bool]:
        """One line per node (arm, policy, executor); False when one of them did not answer."""
        from smolvla_common.qos import LATCHED, RELIABLE
        from smolvla_msgs import msg as messages

        received: dict[str, object] = {}
        chunk_times: list[float] = []
        lock = threading.Lock()

        def keep(node: str):
            def store(msg) -> None:
                with lock:
                    received.setdefault(node, msg)

            return store

        for entry in STATUS_TOPICS:
            qos = LATCHED if entry.node == "arm" else RELIABLE
            msg_type = getattr(messages, entry.type_name)
            topic = full_name(self.namespace, entry.topic)
            self.node.create_subscription(msg_type, topic, keep(entry.node), qos)
        self.node.create_subscription(
            messages.ActionChunk,
            full_name(self.namespace, "smolvla/action_chunk"),
            lambda _msg: chunk_times.append(time.monotonic()),
            RELIABLE,
        )
        deadline = time.monotonic() + self.timeout
        while len(received) < len(STATUS_TOPICS) and time.monotonic() < deadline:
            time.sleep(0.02)
        now = time.monotonic()
        with lock:
            return self._lines(received, now - chunk_times[-1] if chunk_times else None)

    def _lines(self, received: dict, chunk_age: float | None) -> tuple[list[str], bool]:
        describe = {
            "arm": status_text.describe_arm,
            "policy": lambda m: status_text.describe_policy(m, chunk_age),
            "executor": status_text.describe_executor,
        }
        lines = []
        for entry in STATUS_TOPICS:
            msg = received.get(entry.node)
            if msg is None:
                what = f"{full_name(self.namespace, entry.topic)} (smolvla_msgs/msg/{entry.type_name})"
                lines.append(f"{entry.node}: {nobody_text(entry.node, what, self.namespace, self.timeout)}")
            else:
                lines.append(describe[entry.node](msg))
        return lines, len(received) == len(STATUS_TOPICS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="smolvla-ctl", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=[*SERVICES, "status", "instruct"], help="what to do")
    parser.add_argument("instruction", nargs="?", default=None, help="instruct: the task in plain language")
    parser.add_argument(
        "--namespace", default="", help="the graph's namespace (smolvla-run --namespace NS), e.g. left"
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, namespace: str) -> int:
    if args.command == "instruct":
        text = instruct.validate_instruction(args.instruction or "")
        topic = full_name(namespace, "instruction")
        if instruct.publish_instruction(text, topic, wait_s=args.timeout, linger_s=1.0) == 0:
            raise CtlError(instruct.not_received_text(topic, args.timeout + 1.0))
        print(f"smolvla-ctl: instruction '{text}' -> {topic}")
        return 0
    console = Console(namespace, args.timeout)
    try:
        if args.command == "status":
            lines, complete = console.status()
            print("\n".join(lines))
            return 0 if complete else 2
        success, message = console.call(args.command)
    finally:
        console.close()
    if not success:
        print(f"smolvla-ctl: {args.command} FAILED: {message}", file=sys.stderr)
        return 1
    print(f"smolvla-ctl: {args.command}: {message}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exit_:  # argparse: bad usage (or --help, which exits 0)
        return 2 if exit_.code else 0
    try:
        namespace = graph.check_namespace(args.namespace)
        if args.command != "instruct" and args.instruction is not None:
            raise ValueError(f"{args.command} takes no text (only instruct does)")
        if args.timeout <= 0:
            raise ValueError(f"--timeout must be > 0 seconds, got {args.timeout}")
        return run(args, namespace)
    except (CtlError, ValueError) as err:
        print(f"smolvla-ctl: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
