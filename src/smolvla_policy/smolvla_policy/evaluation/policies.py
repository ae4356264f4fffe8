"""The policies an offline evaluation runs: the checkpoint with seeded noise, or the recorded commands."""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from smolvla_common.bags import JointSeries
from smolvla_common.calibration import load_calibration
from smolvla_common.joints import SO101_JOINTS
from smolvla_policy.runtime import InferenceResult, InferredChunk, Observation, PolicyRuntime, RuntimeConfig


def input_seed(seed: int, state: np.ndarray, task: str) -> list[int]:
    """Seed words for the noise of one observation: ``seed`` and a CRC32 of the state and the task.

    The state is rounded to 1e-6 (checkpoint units): last-bit differences of equivalent conversions vanish.
    """
    rounded = np.round(np.asarray(state, dtype=np.float64), 6) + 0.0  # + 0.0 turns -0.0 into 0.0
    return [int(seed), zlib.crc32(task.encode(), zlib.crc32(rounded.tobytes()))]


class SeededNoiseModel:
    """Wraps a ``predict_chunk`` model so its initial noise is a function of ``seed`` and the inputs.

    noise = ``np.random.default_rng(input_seed(...)).standard_normal((chunk_size, max_action_dim))``.
    """

    def __init__(self, model: Any, seed: int = 0):
        self.model = model
        self.seed = int(seed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def noise_for(self, state: np.ndarray, task: str) -> np.ndarray:
        rng = np.random.default_rng(input_seed(self.seed, state, task))
        return rng.standard_normal((self.model.chunk_size, self.model.max_action_dim)).astype(np.float32)

    def predict_chunk(self, images, state, task, **kwargs) -> np.ndarray:
        kwargs.setdefault("noise", self.noise_for(np.asarray(state, dtype=np.float64), task))
        return self.model.predict_chunk(images, state, task, **kwargs)


class GroundTruthPolicy:
    """A "policy" that answers every observation with the recorded commands (a sanity check: zero error).

    Same ``infer`` interface as :class:`~smolvla_policy.runtime.PolicyRuntime`; beyond the recording it holds
    the first/last recorded command.
    """

    def __init__(self, truth: JointSeries, dt: float, chunk_size: int, default_task: str = "replay"):
        self.truth = truth
        self.joint_names = list(truth.joint_names)
        self.dt = float(dt)
        self.chunk_size = int(chunk_size)
        self.default_task = default_task

    def infer(self, obs: Observation, now: float, **_: Any) -> InferenceResult:
        started = time.perf_counter()
        times = obs.stamp + np.arange(self.chunk_size) * self.dt
        columns = [
            np.interp(times, self.truth.times, self.truth.positions[:, j])
            for j in range(len(self.joint_names))
        ]
        positions = np.stack(columns, axis=1)
        chunk = InferredChunk(
            joint_names=self.joint_names,
            positions=positions,
            dt=self.dt,
            stamp=obs.stamp,
            task=(obs.task or self.default_task),
            inference_start=now,
            latency=time.perf_counter() - started,
            observation_age=now - obs.stamp,
            checkpoint_actions=positions,
        )
        return InferenceResult(chunk=chunk)


def load_runtime_policy(
    checkpoint: str,
    cameras: Mapping[str, str] | Sequence[str],
    *,
    units: str = "degrees",
    joint_units: Sequence[str] = (),
    calibration_file: str | None = None,
    task: str = "",
    device: str = "cpu",
    dtype: str = "float32",
    vlm_path: str | None = None,
    seed: int = 0,
    units_check: str = "strict",
    image_resize: str = "refuse",
    max_observation_age_s: float = 0.5,
    fps: float | None = None,
    joint_names: Sequence[str] = SO101_JOINTS,
) -> PolicyRuntime:
    """The policy node's runtime for ``checkpoint`` (validated like the node), with seeded noise."""
    from smolvla_policy.runtime import CheckpointInfo

    config = RuntimeConfig(
        cameras=cameras,
        joint_names=list(joint_names),
        units=units,
        joint_units=list(joint_units) or None,
        calibration=load_calibration(calibration_file) if calibration_file else None,
        default_task=task,
        max_observation_age_s=max_observation_age_s,
        image_resize=image_resize,
        units_check=units_check,
        fps=fps,
    )
    runtime = PolicyRuntime(CheckpointInfo.from_checkpoint(checkpoint), config)
    runtime.load_model(checkpoint, vlm_path=vlm_path, device=device, dtype=dtype)
    runtime.model = SeededNoiseModel(runtime.model, seed)
    return runtime
