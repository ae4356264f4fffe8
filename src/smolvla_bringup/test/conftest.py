"""Fixtures of the bringup tests: a tiny generated SmolVLA checkpoint that fits the sim graph
(``demo_checkpoint``), and ``tiny_checkpoint_factory`` from ``test_support/tiny_checkpoints.py``.

The checkpoint is real (safetensors, LeRobot layout, random weights) and built once per session by
``smolvla_policy.model.generate.make_tiny_checkpoint``: cameras ``top`` and ``wrist`` at
256x256 (the sim's image size), 10-step chunks, 2 denoising steps, LeRobot degree-mode statistics.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny_checkpoints import tiny_checkpoint_factory

__all__ = ["demo_checkpoint", "tiny_checkpoint_factory"]


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory) -> Path:
    from smolvla_bringup.demo import make_demo_checkpoint

    return make_demo_checkpoint(tmp_path_factory.mktemp("bringup_ckpt") / "tiny", tiny=True)
