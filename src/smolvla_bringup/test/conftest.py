"""Shared fixtures of the bringup tests: a tiny generated SmolVLA checkpoint that fits the sim graph.

The checkpoint is real (safetensors, LeRobot layout, random weights) and built once per session by
``smolvla_policy.model.random_checkpoints.make_tiny_checkpoint``: cameras ``top`` and ``wrist`` at
256x256 (the sim's image size), 10-step chunks, 2 denoising steps, LeRobot degree-mode statistics.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from smolvla_bringup.demo import make_demo_checkpoint

    return make_demo_checkpoint(tmp_path_factory.mktemp("bringup_ckpt") / "tiny", tiny=True)
