"""The policy's observation from the newest message of each input: one rule for the policy node, the offline
evaluation and the replay (rclpy messages or messages read from a bag)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from smolvla_common.image_conversion import ImageConversionError, msg_to_rgb
from smolvla_common.timeutil import seconds
from smolvla_policy.runtime.core import Observation


def assemble_observation(
    joint_state: Any,
    images: Mapping[str, Any],
    instruction: str | None,
    camera_topics: Mapping[str, str],
    request_task: str = "",
) -> tuple[Observation | None, str]:
    """The observation, or (None, the reason it cannot be made).

    The stamp is the joint state's (the state the chunk continues from); images are decoded here, each
    with its own stamp (checked against ``max_observation_age_s`` by the runtime); a request's task
    overrides the instruction.
    """
    if joint_state is None:
        return None, "no joint state received on joint_states"
    if len(joint_state.position) != len(joint_state.name):
        return (
            None,
            f"joint_states has {len(joint_state.name)} names but {len(joint_state.position)} positions",
        )
    rgb: dict[str, np.ndarray] = {}
    stamps: dict[str, float] = {}
    for camera, topic in camera_topics.items():
        msg = images.get(camera)
        if msg is None:
            return None, f"no image received from camera {camera!r} on {topic}"
        try:
            rgb[camera] = msg_to_rgb(msg)
        except (ImageConversionError, ValueError) as exc:
            return None, f"camera {camera!r} on {topic}: {exc}"
        stamps[camera] = seconds(msg.header.stamp)
    observation = Observation(
        images=rgb,
        joint_positions=dict(zip(joint_state.name, (float(p) for p in joint_state.position), strict=True)),
        stamp=seconds(joint_state.header.stamp),
        task=request_task if request_task.strip() else instruction,
        image_stamps=stamps,
    )
    return observation, ""
