"""Every smolvla_msgs message goes through real DDS and back, field by field.

Two rclpy nodes in one process: ``sender`` publishes a fully populated message, ``echo`` republishes
what it received on a second topic, and the sender compares the echo with what it sent. Every field
(also nested ones) is filled with a distinct non-default value derived from its type, so a field that
got lost or mangled in the generated type support fails the comparison.
"""

from __future__ import annotations

import importlib
import itertools
import threading
import time

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

from smolvla_msgs.msg import ActionChunk, ArmStatus, ChunkRequest, ExecutorStatus, PolicyStatus

MESSAGE_TYPES = [ActionChunk, ChunkRequest, PolicyStatus, ExecutorStatus, ArmStatus]


def get_message(type_name: str) -> type:
    """``pkg/Name`` (as rosidl names nested fields) to the generated Python class."""
    package, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


INT_BOUNDS = {
    "int8": 127,
    "uint8": 255,
    "int16": 32767,
    "uint16": 65535,
    "int32": 2**31 - 1,
    "uint32": 2**32 - 1,
}


def _fill(msg_or_cls, counter: itertools.count):
    """Populate every field of a message with distinct values chosen from its type."""
    msg = msg_or_cls() if isinstance(msg_or_cls, type) else msg_or_cls
    for name, type_name in msg.get_fields_and_field_types().items():
        setattr(msg, name, _value_for(type_name, counter, name))
    return msg


def _value_for(type_name: str, counter: itertools.count, field: str):
    if type_name.startswith("sequence<"):
        inner = type_name[len("sequence<") : -1].split(",")[0]
        return [_value_for(inner, counter, field) for _ in range(3)]
    n = next(counter)
    if type_name == "boolean":
        return True
    if type_name == "string":
        return f"{field}-{n}-ünïcode"
    if type_name in ("double", "float"):
        return n + 0.25
    if type_name in INT_BOUNDS:
        return n % INT_BOUNDS[type_name] + 1
    if type_name in ("int64", "uint64"):
        return 2**40 + n
    if type_name == "builtin_interfaces/Time" or type_name == "builtin_interfaces/Duration":
        cls = get_message(type_name)
        return cls(sec=n, nanosec=1000 + n)
    if "/" in type_name:
        return _fill(get_message(type_name), counter)
    raise AssertionError(f"no filler for field type {type_name!r}")


def _as_plain(value):
    """Recursively turn a message into plain Python data for a readable comparison."""
    if hasattr(value, "get_fields_and_field_types"):
        return {name: _as_plain(getattr(value, name)) for name in value.get_fields_and_field_types()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
        return [_as_plain(v) for v in value]
    return value


@pytest.fixture
def ros_context():
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


@pytest.mark.parametrize("msg_type", MESSAGE_TYPES, ids=lambda t: t.__name__)
def test_message_survives_dds_round_trip(ros_context, msg_type):
    qos = QoSProfile(
        depth=10,
        reliability=QoSReliabilityPolicy.RELIABLE,
        durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
    )
    sender = rclpy.create_node("roundtrip_sender", context=ros_context)
    echo = rclpy.create_node("roundtrip_echo", context=ros_context)
    out_topic, back_topic = f"/test/{msg_type.__name__}/out", f"/test/{msg_type.__name__}/back"

    echo_pub = echo.create_publisher(msg_type, back_topic, qos)
    echo.create_subscription(msg_type, out_topic, echo_pub.publish, qos)
    received: list = []
    sender.create_subscription(msg_type, back_topic, received.append, qos)
    pub = sender.create_publisher(msg_type, out_topic, qos)

    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(sender)
    executor.add_node(echo)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        sent = _fill(msg_type, itertools.count(1))
        deadline = time.monotonic() + 10.0
        while not received and time.monotonic() < deadline:
            pub.publish(sent)
            time.sleep(0.1)
        assert received, f"{msg_type.__name__} did not come back through DDS within 10 s"
        expected, got = _as_plain(sent), _as_plain(received[0])
        for field in expected:
            assert got[field] == expected[field], f"{msg_type.__name__}.{field} changed in transit"
        # Nested trajectories really carry points (the filler made three per sequence).
        if msg_type in (ActionChunk, ChunkRequest):
            traj = received[0].trajectory if msg_type is ActionChunk else received[0].pending
            assert len(traj.points) == 3 and len(traj.points[0].positions) == 3
    finally:
        executor.shutdown()
        spinner.join(timeout=5)
        sender.destroy_node()
        echo.destroy_node()


def test_constants_are_distinct():
    """State and mode constants must not collide, or status consumers misread them."""
    policy_states = [PolicyStatus.STATE_LOADING, PolicyStatus.STATE_READY, PolicyStatus.STATE_INFERRING]
    policy_states.append(PolicyStatus.STATE_ERROR)
    executor_states = [
        ExecutorStatus.STATE_STOPPED,
        ExecutorStatus.STATE_RUNNING,
        ExecutorStatus.STATE_PAUSED,
        ExecutorStatus.STATE_HOLDING,
        ExecutorStatus.STATE_ESTOP,
    ]
    assert len(set(policy_states)) == 4
    assert len(set(executor_states)) == 5
    arm_states = [ArmStatus.STATE_DISCONNECTED, ArmStatus.STATE_IDLE, ArmStatus.STATE_ENABLED]
    assert len(set([*arm_states, ArmStatus.STATE_FAULT])) == 4
    assert ExecutorStatus.MODE_ASYNC != ExecutorStatus.MODE_SYNC
