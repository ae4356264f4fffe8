"""The SO-100 / SO-101 joints: LeRobot's motor names, in bus order, with their factory servo ids."""

from __future__ import annotations

SO101_JOINTS: tuple[str, ...] = (
    "shoulder_pan",
    "shoulder_lift",
    "elbow_flex",
    "wrist_flex",
    "wrist_roll",
    "gripper",
)
SO101_MOTOR_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
GRIPPER = "gripper"
