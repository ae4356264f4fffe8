"""SmolVLA inference on torch + transformers, weight- and output-compatible with LeRobot 0.4.4."""

from .checkpoint import CheckpointError
from .config import PolicyConfig
from .policy import LoadReport, SmolVLA

__all__ = ["CheckpointError", "LoadReport", "PolicyConfig", "SmolVLA"]
