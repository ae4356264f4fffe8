"""Times and durations of ROS messages: one set of conversions for every node and tool.

``builtin_interfaces`` Time and Duration are ``(sec, nanosec)``. The readers accept any object with those
two fields (rclpy messages, rosbags messages); the builders make rclpy messages, or any type with the
same fields through ``factory`` (the rosbags types the bag writer uses). Only the builders' defaults need
the ROS message packages.
"""

from __future__ import annotations

import math
from typing import Any

NS_PER_S = 1_000_000_000


def nanoseconds(stamp: Any) -> int:
    """A Time or Duration message in nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def seconds(stamp: Any) -> float:
    """A Time or Duration message in seconds."""
    return nanoseconds(stamp) * 1e-9


def header_nanoseconds(msg: Any) -> int:
    """``msg.header.stamp`` in nanoseconds; 0 for a message without a header."""
    header = getattr(msg, "header", None)
    return 0 if header is None else nanoseconds(header.stamp)


def clock_seconds(node: Any) -> float:
    """``node``'s clock now, in seconds: ROS time, or the /clock time under ``use_sim_time``."""
    return node.get_clock().now().nanoseconds * 1e-9


def to_nanoseconds(value_s: float) -> int:
    """Seconds -> integer nanoseconds (a finite value is required)."""
    if not math.isfinite(value_s):
        raise ValueError(f"time must be finite, got {value_s}")
    return round(value_s * 1e9)


def time_msg(value_s: float, factory: Any = None) -> Any:
    """A Time message for ``value_s`` seconds (negative times are clamped to 0)."""
    return time_msg_ns(to_nanoseconds(value_s), factory)


def time_msg_ns(value_ns: int, factory: Any = None) -> Any:
    if factory is None:
        from builtin_interfaces.msg import Time

        factory = Time
    value_ns = max(0, int(value_ns))
    return factory(sec=value_ns // NS_PER_S, nanosec=value_ns % NS_PER_S)


def duration_msg(value_s: float, factory: Any = None) -> Any:
    """A Duration message for ``value_s`` seconds (negative durations are clamped to 0)."""
    if factory is None:
        from builtin_interfaces.msg import Duration

        factory = Duration
    value_ns = max(0, to_nanoseconds(value_s))
    return factory(sec=value_ns // NS_PER_S, nanosec=value_ns % NS_PER_S)
