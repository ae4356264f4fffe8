"""`smolvla-instruct "pick up the red cube"`: give the robot a task without ros2cli.

Equivalent to ``ros2 topic pub --once /instruction std_msgs/msg/String "data: '...'"`` with a latched
(transient-local) publisher, so a policy node that starts later still receives the task. It waits until
a subscriber has matched (or the timeout passes), publishes once, and keeps the message available for
``--linger`` seconds for late joiners. Exit code 0 when a subscriber received it, 1 when none matched
before the linger ended (nothing received it), 2 for an empty or oversized instruction.
"""

from __future__ import annotations

import argparse
import sys
import time

MAX_INSTRUCTION_CHARS = 1000


def latched_qos():
    """The QoS every /instruction publisher and subscriber in this suite uses."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        depth=1,
        history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def validate_instruction(text: str) -> str:
    """Return the cleaned instruction, or raise ValueError saying what is wrong with it."""
    cleaned = text.strip()
    if not cleaned:
        raise ValueError("the instruction is empty; say what the robot should do, e.g. 'pick up the cube'")
    if len(cleaned) > MAX_INSTRUCTION_CHARS:
        raise ValueError(
            f"the instruction has {len(cleaned)} characters; at most {MAX_INSTRUCTION_CHARS} are accepted "
            "(SmolVLA reads only the first few dozen tokens)"
        )
    return cleaned


def publish_instruction(
    text: str, topic: str = "/instruction", wait_s: float = 5.0, linger_s: float = 1.0, args=None
) -> int:
    """Publish one latched instruction; return how many subscribers received it: those matched when it
    was published plus every match until the linger ended (a late joiner gets the latched message when it
    matches). Matches are counted from the publisher's matched events, so a subscriber that joins, takes
    the message and leaves between two looks at the current count is counted too."""
    import rclpy
    from rclpy.duration import Duration
    from rclpy.event_handler import PublisherEventCallbacks
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    matches = [0]  # cumulative matches reported by the middleware

    def on_matched(status) -> None:
        matches[0] = max(matches[0], status.total_count)

    context = rclpy.Context()
    rclpy.init(args=args, context=context)
    node = rclpy.create_node("smolvla_instruct", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    def spin_until(deadline: float, done=lambda: False) -> None:
        while not done() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)

    try:
        callbacks = PublisherEventCallbacks(matched=on_matched)
        publisher = node.create_publisher(String, topic, latched_qos(), event_callbacks=callbacks)
        spin_until(time.monotonic() + wait_s, lambda: publisher.get_subscription_count() > 0)
        executor.spin_once(timeout_sec=0.0)  # take match events still pending
        matches_before = matches[0]
        publisher.publish(String(data=text))
        matched_at_publish = publisher.get_subscription_count()
        spin_until(time.monotonic() + linger_s)
        executor.spin_once(timeout_sec=0.0)
        received = matched_at_publish + matches[0] - matches_before
        if publisher.get_subscription_count():  # reliable: wait until every subscriber acknowledged it
            publisher.wait_for_all_acked(Duration(seconds=1.0))
        return received
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)


def not_received_text(topic: str, waited_s: float) -> str:
    """What to say when nothing subscribed to the instruction topic."""
    return (
        f"nobody received the instruction: no subscriber on {topic} within {waited_s:.1f} s. Is the policy "
        "node running on this ROS_DOMAIN_ID (smolvla-run sim|real|policy), and in this namespace (a graph "
        "started with --namespace left listens on /left/instruction)? The policy's `task` parameter "
        "(smolvla-run --task) is a persistent default."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smolvla-instruct", description=__doc__.splitlines()[0])
    parser.add_argument("instruction", help="the task in plain language, e.g. 'pick up the red cube'")
    parser.add_argument(
        "--topic",
        default="/instruction",
        help="instruction topic (default: /instruction; /left/instruction "
        "for a graph started in the namespace left)",
    )
    parser.add_argument("--wait", type=float, default=5.0, help="seconds to wait for a subscriber")
    parser.add_argument("--linger", type=float, default=1.0, help="seconds to stay up after publishing")
    parsed, ros_args = parser.parse_known_args(argv)
    try:
        text = validate_instruction(parsed.instruction)
    except ValueError as err:
        print(f"smolvla-instruct: {err}", file=sys.stderr)
        return 2
    matched = publish_instruction(text, parsed.topic, parsed.wait, parsed.linger, args=ros_args or None)
    if matched == 0:
        print(
            f"smolvla-instruct: {not_received_text(parsed.topic, parsed.wait + parsed.linger)}",
            file=sys.stderr,
        )
        return 1
    print(f"smolvla-instruct: '{text}' -> {parsed.topic} ({matched} subscriber(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
