"""Fixtures of the smolvla_policy tests: tiny random checkpoints (``test_support/tiny_checkpoints.py``)."""

from tiny_checkpoints import calibration_file, tiny_checkpoint, tiny_checkpoint_factory

__all__ = ["calibration_file", "tiny_checkpoint", "tiny_checkpoint_factory"]
