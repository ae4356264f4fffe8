"""Bag player with ``/clock`` for installs without rosbag2 (full installs can use ``ros2 bag play --clock``).

Publishes a bag's messages at their recorded log times, scaled by ``rate``, and ``/clock``
(rosgraph_msgs/Clock) with the bag time, so nodes started with ``use_sim_time:=true`` (the policy node, the
executor in shadow mode, the replay evaluator) run on the recorded data as if it were live. Messages go out
serialised, exactly as recorded (no deserialisation). The player's own timing uses the wall clock.

QoS: every topic is published reliable (matches reliable and best-effort subscribers), ``/instruction`` also
transient-local so late subscribers still get the task; ``/clock`` best-effort like rosbag2.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from smolvla_common.bags import BagReader
from smolvla_common.messages import import_message
from smolvla_common.parameters import declare_parameters, require
from smolvla_common.timeutil import time_msg_ns

#: topics played transient-local like the publishers that recorded them, by their last name (any namespace)
LATCHED_NAMES = ("instruction",)


def is_latched(topic: str) -> bool:
    """True for a topic played transient-local: ``/instruction`` and ``/<namespace>/instruction``."""
    return topic.rsplit("/", 1)[-1] in LATCHED_NAMES


PARAMETERS = {
    "bag": "",
    "rate": 1.0,
    "topics": [],
    "clock": True,
    "clock_rate_hz": 100.0,
    "start_delay_s": 0.5,
    "wait_for_subscribers_s": 0.0,
    "loop": False,
}


def schedule(bag: BagReader, topics: Sequence[str] | None = None) -> Iterator[tuple[int, str, str, bytes]]:
    """(log_time_ns, topic, msgtype, raw CDR) of the bag in log-time order (ROS-free)."""
    wanted = list(topics) if topics else list(bag.topics)
    for conn, log_time, raw in bag.raw_messages(wanted):
        yield int(log_time), conn.topic, conn.msgtype, raw


class BagPlayer(Node):
    """Plays ``bag`` once (``loop`` repeats it) at ``rate`` x real time; ``done`` is set at the end."""

    def __init__(self, **kwargs):
        super().__init__(kwargs.pop("node_name", "bag_player"), **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.bag: BagReader | None = None
        self.done = threading.Event()
        self.published = 0
        p = declare_parameters(self, PARAMETERS)
        require(bool(p["bag"]), "bag", "a rosbag2 folder", p["bag"])
        for name in ("rate", "clock_rate_hz"):
            require(p[name] > 0, name, "a value > 0", p[name])
        self.bag_path = Path(p["bag"])
        self.rate = p["rate"]
        self.topics = p["topics"]
        self.publish_clock = p["clock"]
        self.clock_period = 1.0 / p["clock_rate_hz"]
        self.start_delay = p["start_delay_s"]
        self.wait_for_subscribers = p["wait_for_subscribers_s"]
        self.loop = p["loop"]
        self.bag = BagReader(self.bag_path)
        self.bag.open()
        self._topic_publishers: dict[str, Any] = {}
        available = self.bag.topics
        missing = [t for t in self.topics if t not in available]
        if missing:
            raise ValueError(f"bag {self.bag_path} has no topics {missing}; it has {sorted(available)}")
        for topic, msgtype in available.items():
            if self.topics and topic not in self.topics:
                continue
            try:
                msg_class = import_message(msgtype)
            except ValueError as exc:
                self.get_logger().warning(f"not playing {topic}: {exc}")
                continue
            durability = DurabilityPolicy.TRANSIENT_LOCAL if is_latched(topic) else DurabilityPolicy.VOLATILE
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=10,
                reliability=ReliabilityPolicy.RELIABLE,
                durability=durability,
            )
            self._topic_publishers[topic] = self.create_publisher(msg_class, topic, qos)
        from rosgraph_msgs.msg import Clock

        self._clock_msg = Clock
        self.clock_pub = self.create_publisher(
            Clock,
            "/clock",
            QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT),
        )
        self._thread = threading.Thread(target=self._play, name="bag_player", daemon=True)
        self._thread.start()

    def _publish_clock(self, bag_time_ns: int) -> None:
        if not self.publish_clock:
            return
        msg = self._clock_msg()
        msg.clock = time_msg_ns(bag_time_ns)
        self.clock_pub.publish(msg)

    def _wait_for_subscribers(self) -> None:
        """Up to ``wait_for_subscribers_s``: until every played topic has a matched subscription."""
        deadline = time.monotonic() + self.wait_for_subscribers
        while not self._stop.is_set() and time.monotonic() < deadline:
            lonely = [t for t, pub in self._topic_publishers.items() if pub.get_subscription_count() == 0]
            if not lonely:
                return
            self._publish_clock(self.bag.start_ns)
            time.sleep(self.clock_period)
        if self.wait_for_subscribers > 0 and not self._stop.is_set():
            lonely = [t for t, pub in self._topic_publishers.items() if pub.get_subscription_count() == 0]
            if lonely:
                self.get_logger().warning(f"playing without subscribers on {lonely}")

    def _play(self) -> None:
        try:
            self._wait_for_subscribers()
            first = True
            while not self._stop.is_set() and (first or self.loop):
                self._play_once(delay=self.start_delay if first else 0.0)
                first = False
        except Exception as exc:  # a corrupt bag ends playback with a clear message, never a crash
            self.get_logger().error(f"playback stopped: {exc}")
        finally:
            self.done.set()

    def _play_once(self, delay: float) -> None:
        start_ns = self.bag.start_ns
        self._publish_clock(start_ns)
        self._sleep(delay, start_ns)
        wall_start = time.monotonic()
        last_clock = 0.0
        for log_time, topic, _, raw in schedule(self.bag, list(self._topic_publishers)):
            due = wall_start + (log_time - start_ns) * 1e-9 / self.rate
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= due:
                    break
                if now - last_clock >= self.clock_period:
                    self._publish_clock(start_ns + int((now - wall_start) * self.rate * 1e9))
                    last_clock = now
                time.sleep(min(due - now, self.clock_period))
            if self._stop.is_set() or not self.context.ok():
                return
            self._publish_clock(log_time)  # the clock is never behind a message being published
            self._topic_publishers[topic].publish(bytes(raw))
            self.published += 1
        self._publish_clock(self.bag.end_ns)

    def _sleep(self, seconds: float, bag_time_ns: int) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._publish_clock(bag_time_ns)
            time.sleep(min(self.clock_period, max(0.0, deadline - time.monotonic())))

    def destroy_node(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5.0)
        if self.bag is not None:
            self.bag.close()
        super().destroy_node()


def main(argv: Sequence[str] | None = None) -> int:
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv if argv is None else ["smolvla-play", *argv])
    parser = argparse.ArgumentParser(
        prog="smolvla-play", description="Play a rosbag2 folder with /clock (ROS arguments after --ros-args)."
    )
    parser.add_argument("bag", nargs="?", help="rosbag2 folder (or the bag parameter)")
    parser.add_argument("--rate", type=float, default=None, help="playback speed factor (default 1)")
    parser.add_argument("--topics", nargs="*", default=[], help="only these topics")
    parser.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    parser.add_argument("--start-delay", type=float, default=None, help="seconds before the first message")
    parser.add_argument("--loop", action="store_true")
    parser.add_argument(
        "--wait-for-subscribers",
        type=float,
        default=None,
        help="wait up to S s for every topic's subscribers",
    )
    args = parser.parse_args(remove_ros_args(argv)[1:])
    rclpy.init(args=argv)
    overrides = [Parameter("bag", value=args.bag)] if args.bag else []
    if args.rate is not None:
        overrides.append(Parameter("rate", value=args.rate))
    if args.start_delay is not None:
        overrides.append(Parameter("start_delay_s", value=args.start_delay))
    if args.no_clock:
        overrides.append(Parameter("clock", value=False))
    if args.loop:
        overrides.append(Parameter("loop", value=True))
    if args.wait_for_subscribers is not None:
        overrides.append(Parameter("wait_for_subscribers_s", value=args.wait_for_subscribers))
    if args.topics:
        overrides.append(Parameter("topics", value=args.topics))
    try:
        node = BagPlayer(parameter_overrides=overrides)
    except Exception as exc:
        print(f"smolvla-play: error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while rclpy.ok() and not node.done.is_set():
            executor.spin_once(timeout_sec=0.1)
        print(f"smolvla-play: published {node.published} messages", file=sys.stderr)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
