"""Tiny random SmolVLA checkpoints for tests, built once per session (pytest fixtures).

``tiny_checkpoint_factory(**kwargs)`` builds (and caches per distinct kwargs) a checkpoint with
``smolvla_policy.model.generate.make_tiny_checkpoint``; ``tiny_checkpoint`` is the default one.
Defaults are chosen for speed: two 48x64 cameras ``top`` and ``wrist``, 6 joints, 10-step chunks, 2 denoising
steps, and dataset statistics in LeRobot degree mode (body joints in degrees, gripper 0..100).
``calibration_file`` is a LeRobot calibration file whose joints all span the requesting test module's
``RANGE_MIN``..``RANGE_MAX`` raw steps, so the module's hand-computed expectations use the same numbers.

A package's ``conftest.py`` imports the fixtures it needs from here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

TINY_DEFAULTS: dict = {
    "cameras": ("top", "wrist"),
    "image_shape": (3, 48, 64),
    "chunk_size": 10,
    "n_action_steps": 10,
    "num_steps": 2,
}
# LeRobot degree-mode statistics: body joints in degrees, the gripper in 0..100.
DEGREE_MODE_STATS = {
    key: {
        "mean": np.array([0.0, -20.0, 30.0, 10.0, 0.0, 30.0]),
        "std": np.array([25.0, 20.0, 20.0, 15.0, 30.0, 15.0]),
        "min": np.array([-90.0, -100.0, -60.0, -80.0, -150.0, 0.0]),
        "max": np.array([90.0, 60.0, 110.0, 90.0, 150.0, 80.0]),
    }
    for key in ("observation.state", "action")
}


@pytest.fixture(scope="session")
def tiny_checkpoint_factory(tmp_path_factory) -> Callable[..., Path]:
    from smolvla_policy.model.generate import make_tiny_checkpoint

    cache: dict[str, Path] = {}

    def build(**kwargs) -> Path:
        options = {**TINY_DEFAULTS, "stats": DEGREE_MODE_STATS, **kwargs}
        key = json.dumps(options, sort_keys=True, default=lambda v: np.asarray(v).tolist())
        if key not in cache:
            cache[key] = make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_ckpt"), **options)
        return cache[key]

    return build


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_checkpoint_factory) -> Path:
    return tiny_checkpoint_factory()


@pytest.fixture(scope="module")
def calibration_file(request, tmp_path_factory) -> Path:
    from smolvla_common.calibration import ArmCalibration, save_calibration
    from smolvla_common.joints import SO101_JOINTS

    low, high = request.module.RANGE_MIN, request.module.RANGE_MAX
    calibration = ArmCalibration.from_dict(
        {
            name: {"id": i + 1, "drive_mode": 0, "homing_offset": 0, "range_min": low, "range_max": high}
            for i, name in enumerate(SO101_JOINTS)
        }
    )
    return save_calibration(calibration, tmp_path_factory.mktemp("calibration") / "follower.json")
