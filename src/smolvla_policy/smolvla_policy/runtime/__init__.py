"""ROS-free SmolVLA policy runtime: validation, unit conversion and camera mapping around the model."""

from smolvla_policy.runtime.checkpoint_info import CheckpointInfo
from smolvla_policy.runtime.core import (
    ConfigurationError,
    InferenceResult,
    InferredChunk,
    Observation,
    PendingActions,
    PolicyRuntime,
    RuntimeConfig,
    image_key,
    resolve_device,
)
from smolvla_policy.runtime.units import (
    UnitConverter,
    UnitsError,
    joint_units_for_mode,
    parse_joint_units,
    resolve_joint_units,
)

__all__ = [
    "CheckpointInfo",
    "ConfigurationError",
    "InferenceResult",
    "InferredChunk",
    "Observation",
    "PendingActions",
    "PolicyRuntime",
    "RuntimeConfig",
    "UnitConverter",
    "UnitsError",
    "image_key",
    "joint_units_for_mode",
    "parse_joint_units",
    "resolve_device",
    "resolve_joint_units",
]
