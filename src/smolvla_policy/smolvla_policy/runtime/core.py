"""The ROS-free policy runtime: observation (images by camera, joint radians, task) -> timed chunk (rad).

Everything between ROS messages and the model lives here: configuration validation against the checkpoint,
camera -> image-feature mapping, unit conversion, per-observation validation, and Real-Time Chunking
alignment. Every refusal is a returned reason string; only the startup validation raises
(:class:`ConfigurationError`), because a policy that does not fit its robot must not start.

Time base: all times are seconds on one clock (the node's clock). An observation's ``stamp`` is the stamp of
its joint state (the proprioceptive state the chunk continues from); action ``i`` of the resulting chunk is
meant for ``stamp + i * dt``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from smolvla_common.calibration import ArmCalibration
from smolvla_common.joints import SO101_JOINTS
from smolvla_policy.features import ACTION_KEY, IMAGE_KEY_PREFIX, STATE_KEY, image_key
from smolvla_policy.runtime.checkpoint_info import CheckpointInfo
from smolvla_policy.runtime.units import (
    UnitConverter,
    UnitsError,
    UnitsFinding,
    check_unit_plausibility,
    resolve_joint_units,
)

LOG = logging.getLogger(__name__)

DEFAULT_FPS = 30.0  # LeRobot's default control rate, used when neither the checkpoint nor the user gives one
MAX_IMAGE_SIDE = 8192
IMAGE_RESIZE_MODES = ("refuse", "resize")
UNITS_CHECK_MODES = ("strict", "warn", "off")


def resolve_device(device: str) -> str:
    """``"auto"`` means the first CUDA GPU when torch sees one, else the CPU; anything else is kept."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class ConfigurationError(ValueError):
    """The configured cameras, joints, units or calibration do not fit the checkpoint."""


@dataclass(frozen=True)
class RuntimeConfig:
    """How the robot side is configured; validated against the checkpoint by :class:`PolicyRuntime`.

    ``cameras``: camera name -> checkpoint image key (``"observation.images.top"`` or just ``"top"``);
    a sequence of names maps each name to ``observation.images.<name>``.
    ``units``: ``radians`` | ``degrees`` (LeRobot degree mode; the gripper stays 0..100) | ``range``
    (LeRobot -100..100, gripper 0..100). ``joint_units`` overrides it per joint (``rad``, ``deg``,
    ``range_m100_100``, ``range_0_100``). ``calibration``: the arm's LeRobot calibration
    (``smolvla_common.calibration.load_calibration``), needed by the range units.
    """

    cameras: Mapping[str, str] | Sequence[str]
    joint_names: Sequence[str] = SO101_JOINTS
    units: str = "degrees"
    joint_units: Sequence[str] | None = None
    gripper_joint: str = "gripper"
    calibration: ArmCalibration | None = None
    default_task: str = ""
    max_task_chars: int = 1000
    max_observation_age_s: float | None = 0.5
    image_resize: str = "refuse"
    units_check: str = "strict"
    fps: float | None = None
    actions_per_chunk: int = 0
    rtc_execution_horizon: int = 0  # 0: the checkpoint's RTC execution horizon
    added_latency_s: float = 0.0  # held after each inference (see runtime.latency); counted by RTC's delay

    def camera_map(self) -> dict[str, str]:
        if isinstance(self.cameras, Mapping):
            return {str(name): image_key(str(key)) for name, key in self.cameras.items()}
        return {str(name): image_key(str(name)) for name in self.cameras}


@dataclass
class Observation:
    """One observation in ROS units. Stamps: seconds on the node clock; ``stamp`` is the joint-state stamp."""

    images: Mapping[str, np.ndarray]  # camera name -> H x W x 3 uint8 RGB
    joint_positions: Mapping[str, float]  # joint name -> rad (REP-103)
    stamp: float
    task: str | None = None  # None or empty: the configured default task
    image_stamps: Mapping[str, float] = field(default_factory=dict)


@dataclass
class PendingActions:
    """Actions the executor still plans to run (rad), at absolute times on the node clock, for RTC."""

    joint_names: Sequence[str]
    times: np.ndarray  # (K,) seconds
    positions: np.ndarray  # (K, J) rad


@dataclass
class InferredChunk:
    """A chunk in ROS units: action ``i`` (``positions[i]``, rad) is meant for ``stamp + i * dt``."""

    joint_names: list[str]
    positions: np.ndarray  # (N, J) rad
    dt: float
    stamp: float
    task: str
    inference_start: float  # node clock, s
    latency: float  # wall-clock duration of preprocessing + model + postprocessing, s
    observation_age: float  # inference_start - stamp, s
    checkpoint_actions: np.ndarray  # (N, J) in checkpoint units, as the model produced them
    rtc_delay_steps: int | None = None  # inference delay given to RTC (None: RTC not used)
    image_ages: dict[str, float] = field(default_factory=dict)  # camera -> inference_start - image stamp, s

    def time_from_start(self) -> np.ndarray:
        return np.arange(len(self.positions)) * self.dt


@dataclass
class InferenceResult:
    """Either a chunk or the reason the observation was refused (never both)."""

    chunk: InferredChunk | None = None
    refusal: str | None = None
    notes: list[str] = field(default_factory=list)  # non-fatal remarks (e.g. RTC skipped and why)

    @property
    def ok(self) -> bool:
        return self.chunk is not None


class PolicyRuntime:
    """Validated glue between a robot configuration and a SmolVLA checkpoint.

    ``PolicyRuntime(info, config)`` validates the configuration (raises :class:`ConfigurationError`);
    :meth:`load_model` (or passing ``model``) makes it ready; :meth:`infer` turns observations into chunks.
    """

    def __init__(self, info: CheckpointInfo, config: RuntimeConfig, model: Any = None):
        self.info = info
        self.config = config
        self.warnings: list[str] = []
        self.camera_map = config.camera_map()
        self.joint_names = list(config.joint_names)
        self._validate_features()
        self.converter = self._make_converter()
        self._check_units()
        self.fps = self._choose_fps()
        self.dt = 1.0 / self.fps
        self.actions_per_chunk = self._choose_chunk_length()
        if config.image_resize not in IMAGE_RESIZE_MODES:
            raise ConfigurationError(
                f"image_resize is {config.image_resize!r}; expected one of {IMAGE_RESIZE_MODES}"
            )
        self.expected_latency: float | None = None
        self._logged_failures: set[str] = set()
        self.model = None
        if model is not None:
            self.attach_model(model)

    # ------------------------------------------------------------------------------------------------ startup

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str,
        config: RuntimeConfig,
        vlm_path: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
    ) -> PolicyRuntime:
        """Read the checkpoint's contract, validate ``config`` against it, then load the weights."""
        runtime = cls(CheckpointInfo.from_checkpoint(checkpoint), config)
        runtime.load_model(checkpoint, vlm_path=vlm_path, device=device, dtype=dtype)
        return runtime

    def load_model(
        self, checkpoint: str, vlm_path: str | None = None, device: str = "cpu", dtype: str = "float32"
    ):
        from smolvla_policy.model import SmolVLA

        self.attach_model(
            SmolVLA.from_pretrained(
                checkpoint, vlm_path=vlm_path or None, device=resolve_device(device), dtype=dtype
            )
        )

    def attach_model(self, model: Any) -> None:
        """Use ``model`` (``predict_chunk`` interface); checks that it matches the checkpoint contract."""
        expected = (self.info.image_keys, self.info.state_dim, self.info.action_dim)
        got = (list(model.image_keys), int(model.state_dim), int(model.action_dim))
        if got != expected:
            raise ConfigurationError(f"model features {got} differ from the checkpoint's config {expected}")
        self.model = model

    def _validate_features(self) -> None:
        info, cameras = self.info, self.camera_map
        expected, mapped = info.image_keys, list(cameras.values())
        if not cameras:
            raise ConfigurationError(
                f"no cameras configured; the checkpoint expects image features {expected} "
                f"(set cameras, e.g. {[k.removeprefix(IMAGE_KEY_PREFIX) for k in expected]})"
            )
        duplicated = sorted({k for k in mapped if mapped.count(k) > 1})
        if duplicated:
            raise ConfigurationError(
                f"several cameras map to the same image feature {duplicated}: camera map {dict(cameras)}"
            )
        if set(mapped) != set(expected):
            missing = [k for k in expected if k not in mapped]
            extra = [f"{n} -> {k}" for n, k in cameras.items() if k not in expected]
            detail = "; ".join(
                part
                for part in (
                    f"no camera maps to {missing}" if missing else "",
                    f"not in the checkpoint: {extra}" if extra else "",
                )
                if part
            )
            raise ConfigurationError(
                f"checkpoint expects image features {expected} but cameras map to {mapped} ({detail}); "
                "set cameras / camera_map so that every checkpoint image feature has exactly one camera"
            )
        if len(set(self.joint_names)) != len(self.joint_names) or not self.joint_names:
            raise ConfigurationError(f"joint_names must be non-empty and unique, got {self.joint_names}")
        n = len(self.joint_names)
        if info.state_dim != n:
            raise ConfigurationError(
                f"checkpoint expects a {info.state_dim}-dimensional {STATE_KEY} but {n} joints are "
                "configured "
                f"(joint_names {self.joint_names})"
            )
        if info.action_dim != n:
            raise ConfigurationError(
                f"checkpoint outputs {info.action_dim}-dimensional actions but {n} joints are configured "
                f"(joint_names {self.joint_names}); actions are applied to the same joints as the state"
            )

    def _make_converter(self) -> UnitConverter:
        config = self.config
        try:
            names = self.joint_names
            units = resolve_joint_units(config.units, names, config.gripper_joint, config.joint_units)
            return UnitConverter(self.joint_names, units, config.calibration)
        except UnitsError as exc:
            raise ConfigurationError(f"units {config.units!r}: {exc}") from exc

    def _check_units(self) -> None:
        mode = self.config.units_check
        if mode not in UNITS_CHECK_MODES:
            raise ConfigurationError(f"units_check is {mode!r}; expected one of {UNITS_CHECK_MODES}")
        if mode == "off":
            return
        findings: list[UnitsFinding] = []
        for feature in (STATE_KEY, ACTION_KEY):
            findings += check_unit_plausibility(
                feature, self.info.stats.get(feature), self.joint_names, self.converter.units
            )
        errors = [f.message for f in findings if f.level == "error"]
        self.warnings += [f.message for f in findings if f.level != "error"]
        if errors and mode == "strict":
            raise ConfigurationError(
                f"checkpoint statistics do not fit the configured joint units {self.converter.units}: "
                + "; ".join(errors)
                + " (units_check:=warn runs anyway)"
            )
        self.warnings += errors

    def _choose_fps(self) -> float:
        fps = self.config.fps or self.info.fps
        if fps is None:
            self.warnings.append(
                "neither the checkpoint nor the configuration gives fps: "
                f"using LeRobot's default {DEFAULT_FPS:g}"
            )
            fps = DEFAULT_FPS
        if not (math.isfinite(fps) and fps > 0):
            raise ConfigurationError(f"fps must be positive, got {fps}")
        return float(fps)

    def _choose_chunk_length(self) -> int:
        n = self.config.actions_per_chunk or self.info.chunk_size
        if not 1 <= n <= self.info.chunk_size:
            raise ConfigurationError(
                f"actions_per_chunk {n} must be in 1..{self.info.chunk_size} (chunk_size)"
            )
        return int(n)

    # ---------------------------------------------------------------------------------------- per observation

    def resolve_task(self, task: str | None) -> tuple[str | None, str | None]:
        """(task, None) or (None, reason): the task or the default; refuses empty and oversized ones."""
        text = (task or "").strip() or self.config.default_task.strip()
        if not text:
            return None, "no task: publish an instruction on /instruction or set the task parameter"
        if len(text) > self.config.max_task_chars:
            return None, (
                f"instruction has {len(text)} characters, more than max_task_chars "
                f"{self.config.max_task_chars}; "
                "send a shorter instruction"
            )
        return text, None

    def prepare(
        self, obs: Observation, now: float
    ) -> tuple[dict[str, np.ndarray] | None, np.ndarray | None, str]:
        """Validate an observation: (images by feature key, state in checkpoint units, task) or a refusal.

        On refusal the first two items are None and the third is the reason.
        """
        task, reason = self.resolve_task(obs.task)
        if reason:
            return None, None, reason
        reason = self._check_age("joint state", obs.stamp, now)
        if reason:
            return None, None, reason
        missing = [n for n in self.joint_names if n not in obs.joint_positions]
        if missing:
            return (
                None,
                None,
                (
                    f"joint state lacks joints {missing} (has {sorted(obs.joint_positions)}; joint_names "
                    f"{self.joint_names})"
                ),
            )
        radians = np.array([obs.joint_positions[n] for n in self.joint_names], dtype=np.float64)
        bad = [n for n, x in zip(self.joint_names, radians, strict=True) if not math.isfinite(x)]
        if bad:
            return None, None, f"joint state has non-finite positions (NaN/inf) for {bad}"
        wild = [
            f"{n}={x:.3g}" for n, x in zip(self.joint_names, radians, strict=True) if abs(x) > 2 * math.pi
        ]
        if wild:
            return None, None, f"joint positions {wild} exceed a full turn: /joint_states must be in radians"
        images: dict[str, np.ndarray] = {}
        for camera, key in self.camera_map.items():
            if camera not in obs.images or obs.images[camera] is None:
                return None, None, f"no image from camera {camera!r} (feature {key})"
            stamp = obs.image_stamps.get(camera)
            if stamp is not None:
                reason = self._check_age(f"image of camera {camera!r}", stamp, now)
                if reason:
                    return None, None, reason
            image, reason = self._check_image(camera, key, obs.images[camera])
            if reason:
                return None, None, reason
            images[key] = image
        return images, self.converter.to_checkpoint(radians), task

    def _check_age(self, what: str, stamp: float, now: float) -> str | None:
        limit = self.config.max_observation_age_s
        if limit is None or limit <= 0:
            return None
        age = now - stamp
        if age > limit:
            return f"{what} is {age:.3f} s old, older than max_observation_age_s {limit:g}"
        if age < -limit:
            return (
                f"{what} is stamped {-age:.3f} s in the future: clocks not synchronised "
                "(or use_sim_time differs between nodes)"
            )
        return None

    def _check_image(self, camera: str, key: str, image: Any) -> tuple[np.ndarray | None, str | None]:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            return (
                None,
                f"image of camera {camera!r} must be H x W x 3 uint8 RGB, got {image.shape} {image.dtype}",
            )
        height, width = image.shape[:2]
        if min(height, width) < 1 or max(height, width) > MAX_IMAGE_SIDE:
            return None, f"image of camera {camera!r} has an implausible size {width}x{height}"
        _, want_h, want_w = self.info.image_shapes[key]
        if (height, width) == (want_h, want_w):
            return image, None
        if self.config.image_resize == "resize":
            import cv2

            return cv2.resize(image, (want_w, want_h), interpolation=cv2.INTER_LINEAR), None
        return None, (
            f"image of camera {camera!r} is {width}x{height} but the checkpoint was trained on "
            f"{want_w}x{want_h} "
            f"({key}); set the camera to that size, or image_resize:=resize"
        )

    def infer(
        self,
        obs: Observation,
        now: float,
        pending: PendingActions | None = None,
        rtc: bool = False,
        on_model_start: Callable[[], None] | None = None,
    ) -> InferenceResult:
        """Validate ``obs`` and compute a chunk; ``now`` is the current node-clock time (s). Never raises.

        ``pending`` + ``rtc``: Real-Time Chunking guided by the executor's pending actions. ``on_model_start``
        is called once the observation is accepted, right before the model runs (e.g. to report INFERRING).
        """
        if self.model is None:
            return InferenceResult(refusal="the model is not loaded yet")
        try:
            images, state, task = self.prepare(obs, now)
        except Exception as exc:  # a malformed observation must never take the node down
            return InferenceResult(refusal=f"invalid observation: {type(exc).__name__}: {exc}")
        if images is None:
            return InferenceResult(refusal=task)
        result = InferenceResult()
        kwargs: dict[str, Any] = {}
        delay_steps = None
        if rtc:
            delay_steps = self.estimate_delay_steps(obs.stamp, now)
            prev, note = self.align_pending(pending, obs.stamp)
            if prev is None:
                result.notes.append(f"RTC not used for this chunk: {note}")
                delay_steps = None
            else:
                kwargs = {"prev_chunk": prev, "inference_delay": delay_steps}
                if self.config.rtc_execution_horizon > 0:
                    kwargs["execution_horizon"] = self.config.rtc_execution_horizon
        if on_model_start is not None:
            on_model_start()
        started = time.perf_counter()
        try:
            raw = np.asarray(self.model.predict_chunk(images, state, task, **kwargs), dtype=np.float64)
        except Exception as exc:
            reason = f"inference failed: {type(exc).__name__}: {exc}"
            if reason not in self._logged_failures:  # the traceback once per distinct failure, not per retry
                self._logged_failures.add(reason)
                LOG.exception(reason)
            return InferenceResult(refusal=reason)
        latency = time.perf_counter() - started
        self.expected_latency = (
            latency if self.expected_latency is None else 0.7 * self.expected_latency + 0.3 * latency
        )
        if raw.ndim != 2 or raw.shape[1] != len(self.joint_names) or not np.all(np.isfinite(raw)):
            return InferenceResult(
                refusal=f"model returned an invalid chunk (shape {raw.shape}, or non-finite values)"
            )
        raw = raw[: self.actions_per_chunk]
        result.chunk = InferredChunk(
            joint_names=list(self.joint_names),
            positions=self.converter.to_radians(raw),
            dt=self.dt,
            stamp=obs.stamp,
            task=task,
            inference_start=now,
            latency=latency,
            observation_age=now - obs.stamp,
            checkpoint_actions=raw,
            rtc_delay_steps=delay_steps,
            image_ages={camera: now - stamp for camera, stamp in obs.image_stamps.items()},
        )
        return result

    # ------------------------------------------------------------------------------------------------ RTC

    def estimate_delay_steps(self, stamp: float, now: float) -> int:
        """Actions of the new chunk already past when it arrives: observation age + expected latency (the
        model's running average plus the configured ``added_latency_s``)."""
        expected = max(0.0, now - stamp) + (self.expected_latency or 0.0) + self.config.added_latency_s
        return int(min(self.info.chunk_size - 1, max(0, math.ceil(expected / self.dt - 1e-9))))

    def align_pending(self, pending: PendingActions | None, stamp: float) -> tuple[np.ndarray | None, str]:
        """Pending actions resampled on the new chunk's grid (``stamp + i * dt``), in checkpoint units.

        Grid times before the first pending action take the first pending action (they are in the past when
        the chunk arrives); the result ends at the last pending action.
        """
        if pending is None or len(pending.times) == 0:
            return None, "no pending actions in the request"
        names = list(pending.joint_names)
        missing = [n for n in self.joint_names if n not in names]
        if missing:
            return None, f"pending actions lack joints {missing}"
        times = np.asarray(pending.times, dtype=np.float64)
        positions = np.asarray(pending.positions, dtype=np.float64)
        if positions.shape != (len(times), len(names)) or not np.all(np.isfinite(positions)):
            return None, f"pending actions are malformed (shape {positions.shape} for {len(times)} times)"
        if np.any(np.diff(times) <= 0):
            return None, "pending action times are not increasing"
        order = [names.index(n) for n in self.joint_names]
        positions = positions[:, order]
        count = math.floor((times[-1] - stamp) / self.dt + 1e-9) + 1
        count = min(count, self.info.chunk_size)
        if count < 1:
            return None, "pending actions end before the observation time"
        grid = stamp + np.arange(count) * self.dt
        resampled = np.stack(
            [np.interp(grid, times, positions[:, j]) for j in range(positions.shape[1])], axis=1
        )
        return self.converter.to_checkpoint(resampled), ""
