"""The ROS-free policy runtime on real tiny SmolVLA checkpoints: startup validation, observations, chunks."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from smolvla_common.calibration import ArmCalibration
from smolvla_common.joints import SO101_JOINTS
from smolvla_policy.runtime import (
    CheckpointInfo,
    ConfigurationError,
    Observation,
    PendingActions,
    PolicyRuntime,
    RuntimeConfig,
)

CALIBRATION = ArmCalibration.from_dict(
    {
        name: {"id": i + 1, "drive_mode": 0, "homing_offset": 0, "range_min": 1000, "range_max": 3000}
        for i, name in enumerate(SO101_JOINTS)
    }
)
NOW = 100.0
FPS = 30.0


@pytest.fixture(scope="module")
def info(tiny_checkpoint) -> CheckpointInfo:
    return CheckpointInfo.from_checkpoint(str(tiny_checkpoint))


@pytest.fixture(scope="module")
def runtime(tiny_checkpoint) -> PolicyRuntime:
    config = RuntimeConfig(cameras=["top", "wrist"], units="degrees", calibration=CALIBRATION, fps=FPS)
    return PolicyRuntime.from_checkpoint(str(tiny_checkpoint), config)


def observation(**overrides) -> Observation:
    fields = {
        "images": {"top": np.full((48, 64, 3), 80, np.uint8), "wrist": np.full((48, 64, 3), 160, np.uint8)},
        "joint_positions": dict(zip(SO101_JOINTS, [0.1, -0.3, 0.5, 0.2, 0.0, 0.3], strict=True)),
        "stamp": NOW - 0.05,
        "task": "pick up the cube",
        "image_stamps": {"top": NOW - 0.06, "wrist": NOW - 0.07},
    }
    fields.update(overrides)
    return Observation(**fields)


def test_chunk_is_in_radians_on_the_observation_time_base(runtime):
    result = runtime.infer(observation(), now=NOW)
    assert result.ok and result.refusal is None
    chunk = result.chunk
    assert chunk.joint_names == list(SO101_JOINTS)
    assert chunk.positions.shape == (10, 6) and chunk.checkpoint_actions.shape == (10, 6)
    assert chunk.dt == pytest.approx(1 / FPS)
    assert chunk.stamp == NOW - 0.05 and chunk.inference_start == NOW
    assert chunk.observation_age == pytest.approx(0.05)
    np.testing.assert_allclose(chunk.time_from_start(), np.arange(10) / FPS)
    # Body joints come back from degrees, the gripper from LeRobot's 0..100 range through the calibration.
    np.testing.assert_allclose(chunk.positions[:, :5], np.radians(chunk.checkpoint_actions[:, :5]))
    gripper = np.clip(chunk.checkpoint_actions[:, 5], 0, 100) / 100 * 2000 + 1000
    np.testing.assert_allclose(chunk.positions[:, 5], (gripper - 2000) * 2 * math.pi / 4095)
    assert chunk.latency > 0 and chunk.task == "pick up the cube"
    assert chunk.image_ages == pytest.approx({"top": 0.06, "wrist": 0.07})


def test_state_reaches_the_model_in_checkpoint_units(runtime):
    images, state, task = runtime.prepare(observation(), now=NOW)
    assert sorted(images) == ["observation.images.top", "observation.images.wrist"]
    np.testing.assert_allclose(state[:5], np.degrees([0.1, -0.3, 0.5, 0.2, 0.0]))
    assert state[5] == pytest.approx(
        ((0.3 * 4095 / (2 * math.pi)) + 1000) / 20
    )  # raw 2195.6 -> 59.8 of 0..100
    assert task == "pick up the cube"


def test_camera_map_renames_to_checkpoint_keys(info):
    config = RuntimeConfig(
        cameras={"cam_a": "top", "cam_b": "observation.images.wrist"}, calibration=CALIBRATION
    )
    runtime = PolicyRuntime(info, config)
    assert runtime.camera_map == {"cam_a": "observation.images.top", "cam_b": "observation.images.wrist"}


@pytest.mark.parametrize(
    ("cameras", "message"),
    [
        (
            ["front"],
            r"checkpoint expects image features \['observation.images.top', 'observation.images.wrist'\] "
            r"but cameras map to \['observation.images.front'\]",
        ),
        (["top"], r"no camera maps to \['observation.images.wrist'\]"),
        (
            {"a": "top", "b": "top"},
            r"several cameras map to the same image feature \['observation.images.top'\]",
        ),
        ([], r"no cameras configured; the checkpoint expects image features"),
    ],
)
def test_camera_mismatch_is_a_clear_startup_error(info, cameras, message):
    with pytest.raises(ConfigurationError, match=message):
        PolicyRuntime(info, RuntimeConfig(cameras=cameras, calibration=CALIBRATION))


def test_joint_count_mismatch_names_both_sides(info):
    with pytest.raises(ConfigurationError, match=r"expects a 6-dimensional observation.state but 5 joints"):
        PolicyRuntime(
            info, RuntimeConfig(cameras=["top", "wrist"], joint_names=SO101_JOINTS[:5], units="radians")
        )


def test_range_mode_without_calibration_is_refused(info):
    with pytest.raises(ConfigurationError, match=r"need the calibrated range.*calibration_file"):
        PolicyRuntime(info, RuntimeConfig(cameras=["top", "wrist"], units="range"))
    # Degree mode keeps the gripper in 0..100 as LeRobot does, so it needs the calibration as well.
    with pytest.raises(ConfigurationError, match=r"joints \['gripper'\] use LeRobot range units"):
        PolicyRuntime(info, RuntimeConfig(cameras=["top", "wrist"], units="degrees"))


def test_units_inconsistent_with_stats_refuse_to_start_unless_relaxed(info):
    config = RuntimeConfig(cameras=["top", "wrist"], units="radians")
    with pytest.raises(
        ConfigurationError, match=r"observation.state\[1\] \(shoulder_lift\).*cannot be radians"
    ):
        PolicyRuntime(info, config)
    relaxed = PolicyRuntime(
        info, RuntimeConfig(cameras=["top", "wrist"], units="radians", units_check="warn")
    )
    assert any("cannot be radians" in w for w in relaxed.warnings)


def test_radian_checkpoint_runs_without_calibration(tiny_checkpoint_factory):
    stats = {key: {"mean": np.zeros(6), "std": np.full(6, 0.4)} for key in ("observation.state", "action")}
    path = tiny_checkpoint_factory(stats=stats)
    runtime = PolicyRuntime.from_checkpoint(
        str(path), RuntimeConfig(cameras=["top", "wrist"], units="radians")
    )
    chunk = runtime.infer(observation(), now=NOW).chunk
    np.testing.assert_allclose(chunk.positions, chunk.checkpoint_actions)
    assert runtime.fps == 30.0 and any("fps" in w for w in runtime.warnings)  # LeRobot's default, reported


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (
            {"joint_positions": dict(zip(SO101_JOINTS, [0, 0, math.nan, 0, 0, 0], strict=True))},
            r"non-finite positions \(NaN/inf\) for \['elbow_flex'\]",
        ),
        (
            {"joint_positions": dict(zip(SO101_JOINTS[:5], [0.0] * 5, strict=True))},
            r"lacks joints \['gripper'\]",
        ),
        (
            {"joint_positions": dict(zip(SO101_JOINTS, [0, 0, 90.0, 0, 0, 0], strict=True))},
            r"\['elbow_flex=90'\] exceed a full turn: /joint_states must be in radians",
        ),
        ({"task": ""}, r"no task: publish an instruction on /instruction or set the task parameter"),
        ({"task": "x" * 10_000}, r"instruction has 10000 characters, more than max_task_chars 1000"),
        ({"stamp": NOW - 2.0}, r"joint state is 2.000 s old, older than max_observation_age_s 0.5"),
        ({"stamp": NOW + 3.0}, r"joint state is stamped 3.000 s in the future"),
        ({"image_stamps": {"top": NOW - 1.0}}, r"image of camera 'top' is 1.000 s old"),
        ({"images": {"top": np.zeros((48, 64, 3), np.uint8)}}, r"no image from camera 'wrist'"),
        (
            {"images": {"top": np.zeros((48, 64), np.uint8), "wrist": np.zeros((48, 64, 3), np.uint8)}},
            r"camera 'top' must be H x W x 3 uint8 RGB, got \(48, 64\) uint8",
        ),
        (
            {"images": {"top": np.zeros((48, 64, 3), np.float32), "wrist": np.zeros((48, 64, 3), np.uint8)}},
            r"camera 'top' must be H x W x 3 uint8 RGB",
        ),
        (
            {"images": {"top": np.zeros((480, 640, 3), np.uint8), "wrist": np.zeros((48, 64, 3), np.uint8)}},
            r"camera 'top' is 640x480 but the checkpoint was trained on 64x48 \(observation.images.top\)",
        ),
    ],
)
def test_bad_observations_are_refused_with_a_reason(runtime, overrides, reason):
    result = runtime.infer(observation(**overrides), now=NOW)
    assert result.chunk is None
    assert result.refusal is not None
    assert re.search(reason, result.refusal), result.refusal


def test_default_task_fills_an_empty_instruction(info):
    config = RuntimeConfig(cameras=["top", "wrist"], calibration=CALIBRATION, default_task="tidy up")
    runtime = PolicyRuntime(info, config)
    assert runtime.resolve_task("") == ("tidy up", None)
    assert runtime.resolve_task("  stack the blocks ") == ("stack the blocks", None)


def test_resize_mode_accepts_other_camera_sizes(tiny_checkpoint):
    config = RuntimeConfig(cameras=["top", "wrist"], calibration=CALIBRATION, image_resize="resize")
    runtime = PolicyRuntime.from_checkpoint(str(tiny_checkpoint), config)
    images = {"top": np.zeros((480, 640, 3), np.uint8), "wrist": np.zeros((24, 32, 3), np.uint8)}
    prepared, _, _ = runtime.prepare(observation(images=images), now=NOW)
    assert {k: v.shape for k, v in prepared.items()} == {
        "observation.images.top": (48, 64, 3),
        "observation.images.wrist": (48, 64, 3),
    }
    assert runtime.infer(observation(images=images), now=NOW).ok


def test_pending_actions_are_resampled_on_the_chunk_grid(runtime):
    stamp = NOW - 0.1
    times = NOW + np.arange(6) / FPS  # executor plan from now on, at 30 Hz
    radians = np.linspace(0.0, 0.5, 6)[:, None] * np.ones((1, 6))
    pending = PendingActions(joint_names=list(SO101_JOINTS)[::-1], times=times, positions=radians[:, ::-1])
    prev, note = runtime.align_pending(pending, stamp)
    assert note == ""
    grid = stamp + np.arange(len(prev)) / FPS
    assert grid[-1] <= times[-1] + 1e-9 < grid[-1] + 1 / FPS
    expected = np.interp(grid, times, radians[:, 0])  # clamped to the first pending action before it starts
    np.testing.assert_allclose(prev[:, 0], np.degrees(expected))


def test_rtc_uses_pending_actions_and_a_measured_delay(runtime):
    first = runtime.infer(observation(), now=NOW).chunk
    times = first.stamp + first.time_from_start()
    pending = PendingActions(joint_names=first.joint_names, times=times, positions=first.positions)
    expected = runtime.estimate_delay_steps(NOW + 0.05, NOW + 0.1)
    result = runtime.infer(observation(stamp=NOW + 0.05), now=NOW + 0.1, pending=pending, rtc=True)
    assert result.ok and not result.notes
    assert result.chunk.rtc_delay_steps == expected
    no_pending = runtime.infer(observation(stamp=NOW + 0.05), now=NOW + 0.1, pending=None, rtc=True)
    assert no_pending.ok and no_pending.chunk.rtc_delay_steps is None
    assert no_pending.notes == ["RTC not used for this chunk: no pending actions in the request"]


def test_rtc_delay_counts_observation_age_plus_expected_latency(info):
    runtime = PolicyRuntime(info, RuntimeConfig(cameras=["top", "wrist"], calibration=CALIBRATION, fps=FPS))
    assert runtime.estimate_delay_steps(NOW - 0.05, NOW) == 2  # 0.05 s * 30 Hz = 1.5 steps; no latency yet
    runtime.expected_latency = 0.1
    assert runtime.estimate_delay_steps(NOW - 0.05, NOW) == 5  # (0.05 + 0.1) * 30 = 4.5
    runtime.expected_latency = 10.0
    assert runtime.estimate_delay_steps(NOW - 0.05, NOW) == 9  # capped at chunk_size - 1


def test_joint_units_override_and_chunk_length(tiny_checkpoint, info):
    # Gripper trained in degrees too: no calibration needed then (the plausibility check only warns here).
    config = RuntimeConfig(cameras=["top", "wrist"], joint_units=["deg"] * 6, actions_per_chunk=4, fps=FPS)
    runtime = PolicyRuntime.from_checkpoint(str(tiny_checkpoint), config)
    assert runtime.converter.units == ["deg"] * 6
    chunk = runtime.infer(observation(), now=NOW).chunk
    assert chunk.positions.shape == (4, 6)
    np.testing.assert_allclose(chunk.positions, np.radians(chunk.checkpoint_actions))
    with pytest.raises(ConfigurationError, match=r"actions_per_chunk 20 must be in 1..10"):
        PolicyRuntime(
            info, RuntimeConfig(cameras=["top", "wrist"], calibration=CALIBRATION, actions_per_chunk=20)
        )
