"""ROS message classes by their type name, as bags and the recorder name them."""

from __future__ import annotations

import importlib
from typing import Any


def import_message(type_name: str) -> Any:
    """``"sensor_msgs/msg/JointState"`` -> the rclpy message class (clear error when unknown)."""
    parts = type_name.split("/")
    if len(parts) != 3 or parts[1] != "msg":
        raise ValueError(f"message type {type_name!r} must look like pkg/msg/Type")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.msg"), parts[2])
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"message type {type_name!r} is not installed ({exc})") from exc
