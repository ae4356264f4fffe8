"""The instruction CLI publishes a latched std_msgs/String over real DDS; exit code 1 when nobody got it."""

from __future__ import annotations

import threading
import time

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import String

from smolvla_bringup.instruct import latched_qos, main, validate_instruction


def test_validation_messages():
    assert validate_instruction("  pick up the red cube \n") == "pick up the red cube"
    with pytest.raises(ValueError, match="empty"):
        validate_instruction("   ")
    with pytest.raises(ValueError, match="10000 characters"):
        validate_instruction("x" * 10_000)


def test_cli_refuses_bad_instruction_without_touching_ros(capsys):
    assert main([""]) == 2
    assert "empty" in capsys.readouterr().err


def _spin_listener(topic: str, received: list[str], start_delay: float, stop: threading.Event):
    time.sleep(start_delay)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("instruction_listener", context=context)
    node.create_subscription(String, topic, lambda msg: received.append(msg.data), latched_qos())
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    while not stop.is_set() and not received:
        executor.spin_once(timeout_sec=0.05)
    node.destroy_node()
    rclpy.shutdown(context=context)


@pytest.mark.parametrize(
    ("start_delay", "domain"), [(0.0, 99), (1.0, 100)], ids=["listening-first", "late-joiner"]
)
def test_cli_delivers_latched_instruction(start_delay, domain, monkeypatch):
    """A listener that is up first gets it; one that joins after the publish gets it too (latched).

    Each case runs in a domain no other test uses (``RESERVED_DOMAIN_IDS`` in the root conftest): CI once
    saw the two fresh participants never discover each other in a domain reused by earlier tests. The late
    joiner gets a 15 s linger: a loaded 2-core CI machine once needed more than 5.5 s to match a participant
    that joined late even in a fresh domain (Fast DDS announces a new participant a few times, then every
    3 s), and the CLI's semantics, not discovery's speed, is what this test is about."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    received: list[str] = []
    stop = threading.Event()
    listener = threading.Thread(target=_spin_listener, args=("/instruction", received, start_delay, stop))
    listener.start()
    try:
        timing = ["--wait", "0.5", "--linger", "15"] if start_delay else ["--wait", "5", "--linger", "1"]
        rc = main(["pick up the red cube", *timing])
    finally:
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        listener.join(timeout=10)
    assert rc == 0
    assert received == ["pick up the red cube"]


def test_cli_exits_1_when_nobody_received_the_instruction(capsys):
    """No subscriber until the linger ended: nothing received it, exit code 1 and what to check."""
    argv = ["pick up the red cube", "--wait", "0.5", "--linger", "0.5", "--topic", "/left/instruction"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "nobody received the instruction: no subscriber on /left/instruction within 1.0 s" in err
    assert "policy node running" in err
