"""What to export: topics, units, task, video encoding (:class:`ExportSettings`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from smolvla_common.joints import SO101_JOINTS


@dataclass
class ExportSettings:
    """Options of one export; every bag of the dataset is read with the same settings."""

    # camera name -> topic (image key observation.images.<name>); None: every image topic of the bags
    camera_topics: dict[str, str] | None = None
    fps: float = 30.0  # a whole number: LeRobot stores an int
    units: str = "degrees"
    joint_units: Sequence[str] = ()  # per-joint override of units (the policy node's joint_units); () = units
    calibration_file: str | None = None
    joint_names: Sequence[str] = SO101_JOINTS
    gripper_joint: str = "gripper"
    joint_state_topic: str = "/joint_states"
    action_topic: str = "/joint_commands"
    instruction_topic: str = "/instruction"
    task: str = ""
    robot_type: str = "so101_follower"
    vcodec: str = "libsvtav1"
    crf: int = 30
    gop: int = 2
    only_successful: bool = False  # skip episodes the operator marked as failed
