"""Golden test of Real-Time Chunking: our guided chunks against LeRobot 0.4.4's own RTC.

``data/rtc_golden`` was written by ``benchmarks/lerobot_rtc_golden.py`` inside ``.venv-lerobot``:
LeRobot's ``predict_action_chunk(..., prev_chunk_left_over=..., inference_delay=..., execution_horizon=...)``
with RTC enabled, on a tiny random checkpoint that this test rebuilds from the same recipe (its file digest
is checked), with the same inputs, noise and previous chunk. The guided actions must agree within the
float32 tolerance of the plain golden test, through ``SmolVLA.predict_chunks`` and through
``PolicyRuntime.infer`` (the policy node's path: pending actions resampled on the chunk's grid, the delay
estimated from the stamps).

Errors are measured in the model's normalised action units (|Δ action| / action std, per joint), where the
sampler and the guidance work: the actions here reach about 120 degrees, where one float32 step is already
7.6e-6. Float noise is about 1e-6 there; the weakest deliberate guidance bug tried (the flow time scaled by
0.999 in the guidance) moves the chunk by 3.6e-3, a delay off by one by 0.46.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from smolvla_common.joints import SO101_JOINTS
from smolvla_policy.model import SmolVLA
from smolvla_policy.model.generate import make_tiny_checkpoint
from smolvla_policy.runtime import core
from smolvla_policy.runtime.checkpoint_info import CheckpointInfo

TOLERANCE = 5e-5  # float32 bound, in normalised action units (the plain golden test's bound)
DATA = Path(__file__).resolve().parent / "data" / "rtc_golden"
META = json.loads((DATA / "rtc_golden.json").read_text())
CASES = {case["name"]: case for case in META["cases"]}
ACTION_STD = np.array(META["checkpoint"]["stats"]["action"]["std"])
STAMP = 100.0
FPS = 10.0


@pytest.fixture(scope="module")
def golden():
    from safetensors.numpy import load_file

    return load_file(str(DATA / "rtc_golden.safetensors"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = make_tiny_checkpoint(tmp_path_factory.mktemp("rtc_golden") / "checkpoint", **META["checkpoint"])
    digest = {
        name: hashlib.sha256((path / name).read_bytes()).hexdigest() for name in META["checkpoint_sha256"]
    }
    assert digest == META["checkpoint_sha256"], (
        "the tiny checkpoint generator no longer reproduces the golden's checkpoint: regenerate the golden "
        "(see the package README, RTC)"
    )
    return path


@pytest.fixture(scope="module")
def policy(checkpoint) -> SmolVLA:
    return SmolVLA.from_pretrained(checkpoint)


def use_case_settings(policy: SmolVLA, case: dict) -> None:
    """The case's schedule and max guidance weight (LeRobot's rtc_config for that run)."""
    rtc = dataclasses.replace(
        policy.config.rtc,
        prefix_attention_schedule=case["prefix_attention_schedule"],
        max_guidance_weight=case["max_guidance_weight"],
    )
    policy.config = dataclasses.replace(policy.config, rtc=rtc)


def error(ours: np.ndarray, lerobot: np.ndarray) -> float:
    """Max |ours - LeRobot| in normalised action units."""
    return float(np.abs((np.asarray(ours, np.float64) - lerobot) / ACTION_STD).max())


def case_inputs(policy: SmolVLA, golden, name: str):
    images = {k: list(golden[f"{name}.input.{k}.uint8_bhwc"]) for k in policy.image_keys}
    return images, golden[f"{name}.input.observation.state"], golden[f"{name}.noise"]


def test_checkpoint_rtc_config_is_read(policy):
    rtc = META["checkpoint"]["rtc_config"]
    assert policy.config.rtc.enabled is True
    assert policy.config.rtc.execution_horizon == rtc["execution_horizon"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_guided_chunk_matches_lerobot(policy, golden, name):
    case = CASES[name]
    use_case_settings(policy, case)
    images, states, noise = case_inputs(policy, golden, name)
    prev = golden[f"{name}.prev_chunk_actions"]
    kwargs = {"inference_delay": case["inference_delay"]}
    if case["execution_horizon"] is not None:
        kwargs["execution_horizon"] = case["execution_horizon"]
    ours = policy.predict_chunks(images, states, case["tasks"], noise, prev_chunks=list(prev), **kwargs)
    lerobot = golden[f"{name}.output.actions"]
    unguided = golden[f"{name}.unguided.actions"]
    diff, effect = error(ours, lerobot), error(unguided, lerobot)
    in_units = np.abs(ours - lerobot).max()
    print(f"{name}: max |ours - LeRobot| = {diff:.2e} normalised, {in_units:.2e} in action units")
    assert effect > 1000 * TOLERANCE, f"{name}: the case does not exercise the guidance ({effect:.3g})"
    assert diff <= TOLERANCE, f"{name}: max |Δ action| / std = {diff:.3e} vs LeRobot's RTC"


@pytest.mark.parametrize("name", sorted(CASES))
def test_unguided_chunk_matches_lerobot(policy, golden, name):
    """Same inputs and noise without a previous chunk (localises a failure to the guidance or the model)."""
    images, states, noise = case_inputs(policy, golden, name)
    ours = policy.predict_chunks(images, states, CASES[name]["tasks"], noise)
    assert error(ours, golden[f"{name}.unguided.actions"]) <= TOLERANCE


class FixedNoise:
    """The runtime's model, with the golden noise: records what the runtime passes to predict_chunk."""

    def __init__(self, policy: SmolVLA, noise: np.ndarray):
        self.policy, self.noise, self.calls = policy, noise, []
        self.image_keys, self.state_dim, self.action_dim = (
            policy.image_keys,
            policy.state_dim,
            policy.action_dim,
        )

    def predict_chunk(self, images, state, task, **kwargs):
        self.calls.append(kwargs)
        return self.policy.predict_chunk(images, state, task, noise=self.noise, **kwargs)


@pytest.mark.parametrize(
    "name", ["linear_d3_config_horizon", "exp_d2_h10_full_prev", "zeros_d5_h4_delay_clipped"]
)
def test_runtime_passes_pending_actions_and_delay_to_the_model(checkpoint, policy, golden, name):
    """The node's path: pending actions (rad, absolute times) and stamps -> LeRobot's RTC chunk."""
    case = CASES[name]
    use_case_settings(policy, case)
    images, states, noise = case_inputs(policy, golden, name)
    model = FixedNoise(policy, noise[0])
    config = core.RuntimeConfig(
        cameras=["top", "wrist"],
        units="radians",  # checkpoint units = ROS units: the golden numbers go through unchanged
        units_check="off",
        fps=FPS,
        max_observation_age_s=None,
        rtc_execution_horizon=case["execution_horizon"] or 0,
    )
    runtime = core.PolicyRuntime(CheckpointInfo.from_checkpoint(str(checkpoint)), config, model=model)
    dt = 1.0 / FPS
    obs = core.Observation(
        images={camera: images[f"observation.images.{camera}"][0] for camera in ("top", "wrist")},
        joint_positions=dict(zip(SO101_JOINTS, states[0].tolist(), strict=True)),
        stamp=STAMP,
        task=case["tasks"][0],
    )
    prev = golden[f"{name}.prev_chunk_actions"][0]
    pending = core.PendingActions(
        joint_names=list(reversed(SO101_JOINTS)),  # any order: the runtime reorders by name
        times=STAMP + np.arange(len(prev)) * dt,
        positions=prev[:, ::-1].astype(np.float64),
    )
    now = STAMP + (case["inference_delay"] - 0.5) * dt  # the observation is that old: delay steps pass
    result = runtime.infer(obs, now=now, pending=pending, rtc=True)
    assert result.ok, result.refusal
    diff = error(result.chunk.checkpoint_actions, golden[f"{name}.output.actions"][0])
    print(f"runtime {name}: max |ours - LeRobot| = {diff:.2e} normalised")
    assert diff <= TOLERANCE, f"runtime {name}: max |Δ action| / std = {diff:.3e} vs LeRobot's RTC"
    assert result.chunk.rtc_delay_steps == case["inference_delay"]
    assert model.calls[-1]["inference_delay"] == case["inference_delay"]
    np.testing.assert_allclose(model.calls[-1]["prev_chunk"], prev, atol=1e-6)

    off = runtime.infer(obs, now=now, pending=pending, rtc=False)  # RTC off: LeRobot's unguided chunk
    assert error(off.chunk.checkpoint_actions, golden[f"{name}.unguided.actions"][0]) <= TOLERANCE
