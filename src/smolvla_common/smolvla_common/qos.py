"""The QoS profiles of the suite's topics, in one place."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from smolvla_common.parameters import require

RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}

#: Latched state (arm status, instruction): a subscriber that starts later gets the latest message.
LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
#: Chunks, requests, statuses, commands: every message matters.
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


def sensor_qos(reliability: str = "best_effort", depth: int = 1) -> QoSProfile:
    """Camera images and joint states: keep only the newest; best effort unless asked otherwise.

    ``reliability`` and ``depth`` come from the parameters ``reliability`` and ``qos_depth``.
    """
    require(reliability in RELIABILITY, "reliability", "best_effort or reliable", reliability)
    require(depth >= 1, "qos_depth", "at least 1", depth)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=RELIABILITY[reliability])
