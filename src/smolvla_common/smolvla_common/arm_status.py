"""The arm's state and safety epoch (``smolvla_msgs/ArmStatus``), as arm nodes publish it and the executor
reads it. :class:`ArmReport` is ROS-free; the message helpers import the message type when called."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from smolvla_common.timeutil import seconds, time_msg

STATES = ("disconnected", "idle", "enabled", "fault")


@dataclass(frozen=True)
class ArmReport:
    """What an arm says of itself; times on the node clock."""

    enabled: bool
    epoch: int  # counts the arm's torque-ons
    enabled_since: float  # time of the latest torque-on
    message: str = ""


#: For arms that publish no status: always enabled, one epoch from the beginning of time.
ALWAYS_ENABLED = ArmReport(True, 0, -math.inf, "no arm status: assumed enabled")


def arm_status_msg(stamp, state: str, epoch: int, enabled_since: float | None, message: str) -> Any:
    """The ArmStatus message; ``state`` one of :data:`STATES`, ``enabled_since`` in seconds (None: never)."""
    from smolvla_msgs.msg import ArmStatus

    if state not in STATES:
        raise ValueError(f"arm state {state!r} is not one of {STATES}")
    msg = ArmStatus(state=getattr(ArmStatus, f"STATE_{state.upper()}"), epoch=epoch, message=message)
    msg.header.stamp = stamp
    if enabled_since is not None:
        msg.enabled_since = time_msg(enabled_since)
    return msg


def arm_report(msg: Any) -> ArmReport:
    """The ArmReport of an ArmStatus message."""
    from smolvla_msgs.msg import ArmStatus

    return ArmReport(msg.state == ArmStatus.STATE_ENABLED, msg.epoch, seconds(msg.enabled_since), msg.message)
