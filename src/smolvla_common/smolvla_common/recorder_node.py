"""Episode recorder for installs without rosbag2: subscribed topics -> one mcap rosbag2 folder per episode.

Full ROS 2 installs can use ``ros2 bag record``; this node writes the same bags (with ``rosbags``, no rosbag2
needed) and adds episodes and their metadata, which ``smolvla-eval`` and ``smolvla-export-dataset`` read.

Services (``std_srvs``): ``~/start_episode`` (Trigger): open ``<output_dir>/<prefix>_<n>`` and record;
``~/stop_episode`` (Trigger): close it; ``~/mark_success`` (SetBool): the operator's verdict on the current
episode (or the last one when none is running). ``~/status`` (std_msgs/String, latched): a JSON object
``{"recording": <folder or null>, "last_episode": <folder or null>}`` after every change. Metadata goes to
``episode.json`` next to ``metadata.yaml`` and into ``metadata.yaml``'s ``custom_data``: task (the newest
``instruction`` or the ``task`` parameter), success, start/end times, message counts.

Messages are recorded serialised (``raw`` subscriptions: the CDR bytes go to the bag untouched), stamped with
the node clock (``use_sim_time`` works). Message types come from the ``topics`` entries
(``topic:pkg/msg/Type``) or from the ROS graph once a publisher appears. Sensor topics are subscribed
best-effort (matches every publisher); ``instruction`` reliable + transient-local (the latched instruction)
and volatile.
The newest instruction is written at the start of every episode so that each bag carries its task.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from smolvla_common.bags import BagWriter
from smolvla_common.messages import import_message
from smolvla_common.node_main import run_node
from smolvla_common.parameters import declare_parameters, require
from smolvla_common.qos import LATCHED

DEFAULT_TOPICS = [
    "joint_states:sensor_msgs/msg/JointState",
    "joint_commands:trajectory_msgs/msg/JointTrajectory",
    "leader/joint_states:sensor_msgs/msg/JointState",
    "instruction:std_msgs/msg/String",
]
PARAMETERS = {
    "output_dir": "recordings",
    "prefix": "episode",
    "storage": "mcap",
    "topics": DEFAULT_TOPICS,
    "cameras": [],
    "task": "",
    "start_on_launch": False,
}


class EpisodeBag:
    """One episode's bag and metadata (ROS-free): raw CDR messages in, mcap/sqlite3 + episode.json out."""

    def __init__(self, path: Path, storage: str, metadata: dict):
        self.path = path
        self.writer = BagWriter(path, storage)
        self.writer.open()
        self.metadata = dict(metadata)
        self.counts: dict[str, int] = {}
        self.types: dict[str, str] = {}

    def write(self, topic: str, msgtype: str, stamp_ns: int, raw: bytes) -> None:
        if topic not in self.types:
            self.writer.add_topic(topic, msgtype)
            self.types[topic] = msgtype
        self.writer.write_raw(topic, stamp_ns, bytes(raw))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self, end_ns: int) -> dict:
        self.metadata.update(end_time_ns=end_ns, message_counts=dict(self.counts), topics=dict(self.types))
        self.writer.custom_data.update({k: json.dumps(v) for k, v in self.metadata.items()})
        self.writer.close()
        write_episode_json(self.path, self.metadata)
        return self.metadata


def write_episode_json(path: Path, metadata: dict) -> None:
    (Path(path) / "episode.json").write_text(json.dumps(metadata, indent=2))


class RecorderNode(Node):
    def __init__(self, **kwargs):
        super().__init__(kwargs.pop("node_name", "recorder"), **kwargs)
        p = declare_parameters(self, PARAMETERS)
        require(p["storage"] in ("mcap", "sqlite3"), "storage", "mcap or sqlite3", p["storage"])
        self.output_dir = Path(p["output_dir"])
        self.prefix = p["prefix"]
        self.storage = p["storage"]
        self.default_task = p["task"]
        entries = p["topics"] + [f"cameras/{c}/image_raw:sensor_msgs/msg/Image" for c in p["cameras"]]
        self.wanted: dict[str, str | None] = {}  # resolved topic (recorded under this name) -> type
        for entry in entries:
            topic, _, type_name = entry.partition(":")
            self.wanted[self.resolve_topic_name(topic.strip())] = type_name.strip() or None
        self.instruction_topic = self.resolve_topic_name("instruction")
        self._lock = threading.Lock()
        self.episode: EpisodeBag | None = None
        self.last_episode: dict | None = None
        self.last_episode_path: Path | None = None
        self.episode_index = self._next_index()
        self.instruction: tuple[str, bytes] | None = None  # (text, raw CDR)
        self.subscribed: dict[str, str] = {}
        self._recorded_subscriptions: list = []
        self.status_publisher = self.create_publisher(String, "~/status", LATCHED)
        self._publish_status()
        self.create_service(Trigger, "~/start_episode", self._on_start)
        self.create_service(Trigger, "~/stop_episode", self._on_stop)
        self.create_service(SetBool, "~/mark_success", self._on_mark_success)
        self._resolve()
        self.create_timer(0.5, self._resolve)
        if p["start_on_launch"]:
            self.start_episode()

    # ------------------------------------------------------------------------------------- topics

    def _resolve(self) -> None:
        """Subscribe every wanted topic whose type is known (from the parameter or the graph)."""
        graph = dict(self.get_topic_names_and_types())
        for topic, type_name in self.wanted.items():
            if topic in self.subscribed:
                continue
            type_name = type_name or (graph.get(topic) or [None])[0]
            if type_name is None:
                continue
            try:
                msg_class = import_message(type_name)
            except ValueError as exc:
                self.get_logger().error(f"cannot record {topic}: {exc}", throttle_duration_sec=10.0)
                continue
            for qos in self._qos_profiles(topic):
                self._recorded_subscriptions.append(
                    self.create_subscription(
                        msg_class,
                        topic,
                        lambda raw, t=topic, m=type_name: self._on_message(t, m, raw),
                        qos,
                        raw=True,
                    )
                )
            self.subscribed[topic] = type_name

    def _qos_profiles(self, topic: str) -> list[QoSProfile]:
        if topic == self.instruction_topic:
            return [
                QoSProfile(
                    history=HistoryPolicy.KEEP_LAST,
                    depth=1,
                    reliability=ReliabilityPolicy.RELIABLE,
                    durability=durability,
                )
                for durability in (DurabilityPolicy.TRANSIENT_LOCAL, DurabilityPolicy.VOLATILE)
            ]
        return [
            QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)
        ]

    def _publish_status(self) -> None:
        """Latch what is recording now, so that a client can tell whether its request took effect."""
        self.status_publisher.publish(String(data=json.dumps(self.status())))

    def status(self) -> dict:
        return {
            "recording": str(self.episode.path) if self.episode is not None else None,
            "last_episode": str(self.last_episode_path) if self.last_episode_path is not None else None,
        }

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_message(self, topic: str, type_name: str, raw: bytes) -> None:
        stamp = self._now_ns()
        with self._lock:
            if type_name == "std_msgs/msg/String":
                from rclpy.serialization import deserialize_message

                text = deserialize_message(raw, String).data
                if self.instruction is not None and self.instruction[1] == raw:
                    return  # the same latched instruction through both subscriptions
                self.instruction = (text, bytes(raw))
            if self.episode is not None:
                self.episode.write(topic, type_name, stamp, raw)

    # ------------------------------------------------------------------------------------- episodes

    def _next_index(self) -> int:
        existing = sorted(self.output_dir.glob(f"{self.prefix}_*")) if self.output_dir.is_dir() else []
        numbers = [int(p.name.rsplit("_", 1)[-1]) for p in existing if p.name.rsplit("_", 1)[-1].isdigit()]
        return max(numbers, default=-1) + 1

    def start_episode(self) -> tuple[bool, str]:
        with self._lock:
            if self.episode is not None:
                return False, f"episode already recording to {self.episode.path}; call ~/stop_episode first"
            path = self.output_dir / f"{self.prefix}_{self.episode_index:04d}"
            self.output_dir.mkdir(parents=True, exist_ok=True)
            task = (
                self.instruction[0].strip()
                if self.instruction and self.instruction[0].strip()
                else self.default_task
            )
            start = self._now_ns()
            try:
                self.episode = EpisodeBag(
                    path,
                    self.storage,
                    {
                        "episode_index": self.episode_index,
                        "task": task,
                        "success": None,
                        "start_time_ns": start,
                        "recorder": self.get_fully_qualified_name(),
                    },
                )
            except Exception as exc:
                return False, f"cannot open {path}: {exc}"
            if self.instruction is not None:  # every bag carries the instruction it was recorded under
                self.episode.write(self.instruction_topic, "std_msgs/msg/String", start, self.instruction[1])
            self.episode_index += 1
            self._publish_status()
        self.get_logger().info(f"recording episode to {path} (task {task!r})")
        return True, str(path)

    def stop_episode(self) -> tuple[bool, str]:
        with self._lock:
            if self.episode is None:
                return False, "no episode is recording"
            episode, self.episode = self.episode, None
            if episode.metadata.get("task", "") == "" and self.instruction is not None:
                episode.metadata["task"] = self.instruction[0].strip()
            self.last_episode = episode.close(self._now_ns())
            self.last_episode_path = episode.path
            self._publish_status()
        counts = ", ".join(f"{t}: {n}" for t, n in sorted(self.last_episode["message_counts"].items()))
        self.get_logger().info(f"episode saved to {episode.path} ({counts or 'no messages'})")
        return True, str(episode.path)

    def mark_success(self, success: bool) -> tuple[bool, str]:
        with self._lock:
            if self.episode is not None:
                self.episode.metadata["success"] = bool(success)
                return True, f"{self.episode.path}: success={bool(success)} (recording)"
            if self.last_episode is None:
                return False, "no episode recorded yet"
            self.last_episode["success"] = bool(success)
            write_episode_json(self.last_episode_path, self.last_episode)
            return True, f"{self.last_episode_path}: success={bool(success)}"

    def _on_start(self, _request, response):
        response.success, response.message = self.start_episode()
        return response

    def _on_stop(self, _request, response):
        response.success, response.message = self.stop_episode()
        return response

    def _on_mark_success(self, request, response):
        response.success, response.message = self.mark_success(request.data)
        return response

    def destroy_node(self) -> None:
        if self.episode is not None:
            self.stop_episode()  # never lose a recording on shutdown
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    return run_node(RecorderNode, "recorder_node", argv)


#: Seconds without an answer before the command-line client asks again.
RESEND_S = 1.5


def effect_of(action: str, before: dict, now: dict) -> str | None:
    """The episode folder that ``start`` or ``stop`` produced, judged from the recorder's status before and
    now; None while no such change is seen."""
    if action == "start" and now["recording"] and now["recording"] != before["recording"]:
        return now["recording"]
    if action == "stop" and before["recording"] and now["recording"] is None:
        return before["recording"]
    return None


def call_recorder(node: Node, recorder: str, action: str, timeout: float) -> tuple[int, str]:
    """Ask the recorder ``recorder`` to ``action``; (exit code, text): 0 done, 1 refused, 2 no answer.

    A server can drop its answer to a client it has not fully discovered yet (Fast DDS: "failed to send
    response (timeout)"), so the request is sent again after RESEND_S. Marking success is idempotent;
    start and stop are not, so their outcome is read from the recorder's latched ``~/status``: a repeat
    refused because the first request already did the job still counts as done.
    """
    deadline = time.monotonic() + timeout
    if action in ("start", "stop"):
        client = node.create_client(Trigger, f"{recorder}/{action}_episode")
        request = Trigger.Request()
    else:
        client = node.create_client(SetBool, f"{recorder}/mark_success")
        request = SetBool.Request(data=action == "success")
    statuses: list[dict] = []
    node.create_subscription(
        String, f"{recorder}/status", lambda m: statuses.append(json.loads(m.data)), LATCHED
    )
    if not client.wait_for_service(timeout_sec=timeout):
        return 2, f"service {client.srv_name} not available (is recorder_node running?)"
    before = None
    if action in ("start", "stop"):
        status_deadline = min(deadline, time.monotonic() + 2.0)
        while not statuses and time.monotonic() < status_deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        before = statuses[-1] if statuses else None  # None: an older recorder; send once, no repeat
    may_repeat = before is not None or action not in ("start", "stop")
    futures: list = []
    resend_at = time.monotonic()
    refused_at = None
    while time.monotonic() < deadline:
        if time.monotonic() >= resend_at and (may_repeat or not futures) and refused_at is None:
            futures.append(client.call_async(request))
            resend_at = time.monotonic() + RESEND_S
        rclpy.spin_once(node, timeout_sec=0.05)
        if before is not None and statuses and (folder := effect_of(action, before, statuses[-1])):
            return 0, folder
        answered = next((future for future in futures if future.done()), None)
        if answered is None:
            continue
        response = answered.result()
        if response.success or answered is futures[0] or before is None:
            return (0 if response.success else 1), response.message
        refused_at = refused_at or time.monotonic()  # a refused repeat: wait a moment for the status
        if time.monotonic() - refused_at > RESEND_S:
            return 1, response.message
    return 2, f"no answer from {client.srv_name} within {timeout:g} s"


def episode_cli(argv: list[str] | None = None) -> int:
    """``smolvla-record start|stop|success|failure``: call the recorder's services (no ros2cli needed)."""
    import argparse

    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv if argv is None else ["smolvla-record", *argv])
    parser = argparse.ArgumentParser(prog="smolvla-record", description="Control the episode recorder node.")
    parser.add_argument("action", choices=("start", "stop", "success", "failure"))
    parser.add_argument("--node", default="/recorder", help="the recorder node's name (with its namespace)")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(remove_ros_args(argv)[1:])
    rclpy.init(args=argv)
    node = rclpy.create_node("smolvla_record_cli")
    try:
        code, text = call_recorder(node, args.node, args.action, args.timeout)
        print(text if code < 2 else f"smolvla-record: {text}", file=sys.stdout if code < 2 else sys.stderr)
        return code
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
