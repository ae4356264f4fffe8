"""Offline evaluation (smolvla-eval) on bags the tests generate with rosbags, in mcap and sqlite3.

The synthetic bag (``synthetic_bags.write_synthetic_bag``) has a known commanded trajectory, so the expected
errors are
computed here by hand from the analytic trajectory and a direct call of the real tiny SmolVLA checkpoint.
"""

from __future__ import annotations

import json
import math
import re
import warnings
import zlib

import numpy as np
import pytest

import synthetic_bags
from smolvla_common import bags
from smolvla_common.bags import BagError
from smolvla_common.joints import SO101_JOINTS
from smolvla_policy.evaluation import (
    EvalSettings,
    GroundTruthPolicy,
    evaluate_bag,
    load_runtime_policy,
    main,
    read_ground_truth,
    write_report,
)

CAMERAS = {"top": "/cameras/top/image_raw", "wrist": "/cameras/wrist/image_raw"}
DT = 1 / 30
START = 100.0
DURATION = 3.0
RANGE_MIN, RANGE_MAX = 1000, 3000  # every joint's range in the `calibration_file` fixture


@pytest.fixture(scope="module")
def bag_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    return {
        s: synthetic_bags.write_synthetic_bag(root / f"run_{s}", s, duration_s=DURATION, start_s=START)
        for s in ("mcap", "sqlite3")
    }


def settings(**kwargs) -> EvalSettings:
    return EvalSettings(camera_topics=dict(CAMERAS), **kwargs)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_ground_truth_replay_scores_zero(bag_paths, storage, tmp_path):
    bag = bag_paths[storage]
    with bags.BagReader(bag) as reader:
        assert reader.storage == storage
        truth = read_ground_truth(reader, "/joint_commands", SO101_JOINTS)
    result = evaluate_bag(bag, GroundTruthPolicy(truth, DT, 10), settings(stride=5), progress=False)
    m = result.metrics
    assert result.samples == 90 // 5 and len(result.records) == result.samples
    assert m["compared_actions"] > 100
    assert m["mae"]["all"] == pytest.approx(0.0, abs=1e-12)
    assert m["rmse"]["all"] == pytest.approx(0.0, abs=1e-12)
    assert m["gripper"]["agreement"] == 1.0
    # Chunk k+1 starts where chunk k's plan is at that time: no boundary jumps for the recorded trajectory.
    assert m["boundary_jumps"]["max"] == pytest.approx(0.0, abs=1e-6)
    # Against a time-shifted copy of the truth the error is not zero (the comparison can fail).
    shifted = bags.JointSeries(truth.joint_names, truth.times + 0.2, truth.positions)
    off = evaluate_bag(bag, GroundTruthPolicy(shifted, DT, 10), settings(stride=5), progress=False)
    assert off.metrics["mae"]["all"] > 0.01


def to_checkpoint_units(rad: np.ndarray) -> np.ndarray:
    """Degree mode by hand: body joints rad -> degrees, gripper rad -> 0..100 of the calibrated range."""
    out = np.degrees(rad)
    raw = rad[5] * 4095 / (2 * math.pi) + (RANGE_MIN + RANGE_MAX) / 2
    out[5] = 100 * (raw - RANGE_MIN) / (RANGE_MAX - RANGE_MIN)
    return out


def to_radians(values: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_checkpoint_units`; the gripper is clamped to 0..100 first, as LeRobot does."""
    out = np.radians(values)
    raw = np.clip(values[:, 5], 0, 100) / 100 * (RANGE_MAX - RANGE_MIN) + RANGE_MIN
    out[:, 5] = (raw - (RANGE_MIN + RANGE_MAX) / 2) * 2 * math.pi / 4095
    return out


def test_tiny_random_policy_scores_the_hand_computed_error(
    bag_paths, tiny_checkpoint, calibration_file, tmp_path
):
    from smolvla_policy.model import SmolVLA

    stride, seed = 15, 7
    policy = load_runtime_policy(
        str(tiny_checkpoint),
        list(CAMERAS),
        calibration_file=str(calibration_file),
        seed=seed,
        units_check="warn",
    )
    result = evaluate_bag(bag_paths["mcap"], policy, settings(stride=stride), progress=False)
    assert not result.refusals and len(result.records) == 90 // stride

    model = SmolVLA.from_pretrained(tiny_checkpoint)
    errors = []
    for k in range(0, 90, stride):
        t = k * DT  # sample at joint state k; the newest camera frame (15 fps) at or before t
        frame_t = math.floor(t * 15 + 1e-6) / 15
        images = {
            f"observation.images.{name}": synthetic_bags.synthetic_image(frame_t, i)
            for i, name in enumerate(CAMERAS)
        }
        state = to_checkpoint_units(synthetic_bags.synthetic_command(t - 1 / 30))
        task = "pick up the cube"
        crc = zlib.crc32(task.encode(), zlib.crc32((np.round(state, 6) + 0.0).tobytes()))
        noise = (
            np.random.default_rng([seed, crc]).standard_normal((10, model.max_action_dim)).astype(np.float32)
        )
        predicted = to_radians(model.predict_chunk(images, state, task, noise=noise).astype(np.float64))
        times = t + np.arange(10) * DT
        truth = synthetic_bags.synthetic_command(times)
        truth[times > DURATION - DT + 1e-9] = np.nan  # the last command is for DURATION - dt
        errors.append(np.abs(predicted - truth))
    errors = np.stack(errors)
    expected_mae = np.nanmean(errors, axis=(0, 1))
    expected_rmse = np.sqrt(np.nanmean(errors**2, axis=(0, 1)))
    m = result.metrics
    for j, name in enumerate(SO101_JOINTS):
        assert m["mae"][name] == pytest.approx(expected_mae[j], rel=1e-4, abs=1e-6), name
        assert m["rmse"][name] == pytest.approx(expected_rmse[j], rel=1e-4, abs=1e-6), name
    assert np.array(m["mae_by_step"], float) == pytest.approx(np.nanmean(errors, axis=0), rel=1e-4, abs=1e-6)
    assert m["mae"]["all"] > 0.05  # a random policy is far from the recording
    assert m["latency"]["count"] == len(result.records) and m["latency"]["mean"] > 0

    # Same seed, same result: the evaluation is reproducible.
    again = evaluate_bag(bag_paths["mcap"], policy, settings(stride=stride), progress=False)
    assert again.metrics["mae"] == m["mae"]

    report = write_report(result, tmp_path / "report")
    data = json.loads(report.read_text())
    assert data["metrics"]["mae"]["all"] == pytest.approx(m["mae"]["all"])
    for name in ("predicted_vs_recorded.png", "error_by_horizon.png", "latency_histogram.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "shoulder_pan" in (tmp_path / "report" / "report.md").read_text()
    assert "<table>" in (tmp_path / "report" / "report.html").read_text()


def test_command_line_ground_truth_on_sqlite(bag_paths, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            str(bag_paths["sqlite3"]),
            "--ground-truth",
            "--chunk-size",
            "10",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    assert json.loads((out / "report.json").read_text())["metrics"]["mae"]["all"] == 0.0
    assert "report:" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ bad bags


def copy_bag(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst, next(p for p in dst.iterdir() if p.suffix in (".mcap", ".db3"))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_names_the_file(bag_paths, storage, tmp_path):
    bag, storage_file = copy_bag(bag_paths[storage], tmp_path / "truncated")
    with open(storage_file, "r+b") as f:
        f.truncate(storage_file.stat().st_size // 2)
    with pytest.raises(BagError, match=rf"{storage_file.name}.*truncated or corrupt"):
        evaluate_bag(
            bag,
            GroundTruthPolicy(bags.JointSeries(list(SO101_JOINTS), np.zeros(0), np.zeros((0, 6))), DT, 10),
            settings(),
            progress=False,
        )


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_corrupt_message_names_topic_and_type(bag_paths, storage, tmp_path):
    bag, storage_file = copy_bag(bag_paths[storage], tmp_path / "corrupt")
    data = bytearray(storage_file.read_bytes())
    i = data.find(b"shoulder_pan", len(data) // 2)
    while i > 0:  # every joint-name string in the second half of the recording gets an impossible CDR length
        data[i - 4 : i] = b"\xff\xff\xff\x7f"
        i = data.find(b"shoulder_pan", i + 1)
    storage_file.write_bytes(bytes(data))
    with pytest.raises(
        BagError,
        match=r"on /joint_(states|commands) \((sensor|trajectory)_msgs/msg/Joint\w+\) cannot be deserialised",
    ):
        main_args = [str(bag), "--ground-truth", "--no-progress", "--out", str(tmp_path / "r")]
        with bags.BagReader(bag) as reader:
            truth = read_ground_truth(reader, "/joint_commands", SO101_JOINTS)
        evaluate_bag(bag, GroundTruthPolicy(truth, DT, 10), settings(), progress=False)
    assert main(main_args) == 2


def test_missing_topic_and_wrong_type_are_named(tmp_path, capsys):
    bag = synthetic_bags.write_synthetic_bag(
        tmp_path / "odd",
        "mcap",
        duration_s=0.5,
        cameras=("top",),
        extra={
            "/leader/joint_states": (
                bags.STRING,
                [(int(100.1e9), synthetic_bags.string_msg("not a joint state"))],
            )
        },
    )
    truth = bags.JointSeries(list(SO101_JOINTS), np.array([0.0, 1.0]), np.zeros((2, 6)))
    policy = GroundTruthPolicy(truth, DT, 10)
    with pytest.raises(
        BagError,
        match=r"topic /cameras/wrist/image_raw is missing .*Topics in the bag: .*/cameras/top/image_raw",
    ):
        evaluate_bag(bag, policy, settings(), progress=False)
    with pytest.raises(
        BagError,
        match=r"topic /leader/joint_states has type std_msgs/msg/String, "
        r"expected trajectory_msgs/msg/JointTrajectory or sensor_msgs/msg/JointState",
    ):
        evaluate_bag(
            bag,
            policy,
            EvalSettings({"top": CAMERAS["top"]}, ground_truth_topic="/leader/joint_states"),
            progress=False,
        )
    assert (
        main(
            [
                str(bag),
                "--ground-truth",
                "--cameras",
                "top",
                "--joint-states-topic",
                "/arm/joint_states",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "topic /arm/joint_states is missing" in capsys.readouterr().err
    with pytest.raises(BagError, match="does not exist"):
        bags.BagReader(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match=r"no metadata\.yaml"):
        bags.BagReader(tmp_path / "empty")


def test_refused_observations_are_counted_with_reasons(bag_paths, tiny_checkpoint, calibration_file):
    """Images older than max_observation_age_s are refused exactly like the policy node refuses them."""
    policy = load_runtime_policy(
        str(tiny_checkpoint),
        list(CAMERAS),
        calibration_file=str(calibration_file),
        units_check="warn",
        max_observation_age_s=0.01,
    )
    result = evaluate_bag(bag_paths["mcap"], policy, settings(stride=1), progress=False)
    # Cameras run at 15 fps and joint states at 30 fps: every other observation has a 33 ms old frame.
    assert sum(result.refusals.values()) == 45 and len(result.records) == 45
    assert any("older than max_observation_age_s" in reason for reason in result.refusals)


def test_compressed_camera_topics_are_decoded_like_the_node_does(tmp_path):
    """A jpeg CompressedImage camera (image_transport's */compressed) is decoded as the node does."""
    import cv2

    frame = synthetic_bags.synthetic_image(0.0, 0)
    _, jpeg = cv2.imencode(".jpg", frame[:, :, ::-1])
    compressed = bags.typestore().types[bags.COMPRESSED_IMAGE]
    items = [
        (
            int(100e9) + k * 100_000_000,
            compressed(
                header=synthetic_bags.header_msg(int(100e9) + k * 100_000_000),
                format="jpeg",
                data=jpeg.reshape(-1),
            ),
        )
        for k in range(10)
    ]
    bag = synthetic_bags.write_synthetic_bag(
        tmp_path / "jpeg",
        "mcap",
        duration_s=1.0,
        cameras=(),
        extra={"/cameras/top/compressed": (bags.COMPRESSED_IMAGE, items)},
    )
    seen = []

    class Recording(GroundTruthPolicy):
        def infer(self, obs, now, **kwargs):
            seen.append(obs.images["top"])
            return super().infer(obs, now, **kwargs)

    truth = bags.JointSeries(list(SO101_JOINTS), np.array([0.0, 1e3]), np.zeros((2, 6)))
    result = evaluate_bag(
        bag, Recording(truth, DT, 5), EvalSettings({"top": "/cameras/top/compressed"}), progress=False
    )
    assert not result.refusals and len(seen) == 3
    assert seen[0].shape == (48, 64, 3) and np.abs(seen[0].astype(int) - frame).mean() < 8  # jpeg-close


# ------------------------------------------------------------------------------------------ the console


def test_a_missing_bag_is_reported_before_a_missing_checkpoint(tmp_path, capsys):
    assert main([str(tmp_path / "nonexistent.mcap"), "--checkpoint", "X", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "nonexistent.mcap does not exist" in err and "checkpoint" not in err


def test_a_missing_checkpoint_is_one_line_not_a_traceback(bag_paths, tmp_path, capsys):
    code = main(
        [str(bag_paths["mcap"]), "--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("smolvla-eval: error: checkpoint directory") and "Traceback" not in err


def test_refusal_reasons_are_grouped_on_the_console(
    bag_paths, tiny_checkpoint, calibration_file, tmp_path, capsys
):
    args = [
        str(bag_paths["mcap"]),
        "--checkpoint",
        str(tiny_checkpoint),
        "--calibration",
        str(calibration_file),
    ]
    args += ["--units-check", "warn", "--max-age", "0.01", "--stride", "1", "--no-progress"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a leaked library warning (matplotlib) fails the test
        assert main([*args, "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "refused observations (45), by reason:" in err
    assert re.search(r"^\s+45 x .*older than max_observation_age_s", err, re.MULTILINE), err


def test_an_existing_report_is_never_overwritten_silently(bag_paths, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    args = [str(bag_paths["mcap"]), "--ground-truth", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    first = (out / "report.json").read_text()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already holds a report" in err and "--overwrite" in err
    assert (out / "report.json").read_text() == first and (out / "latency_histogram.png").exists()
    assert main([*args, "--overwrite", "--no-plots"]) == 0
    assert not list(out.glob("*.png")), "plots of the earlier run were left beside the new report"
    monkeypatch.chdir(tmp_path)  # the default folder is a new one per run, under reports/eval/
    assert main([str(bag_paths["mcap"]), "--ground-truth", "--no-progress", "--no-plots"]) == 0
    reports = list((tmp_path / "reports" / "eval").glob(f"{bag_paths['mcap'].name}-*/report.json"))
    assert len(reports) == 1, reports


def test_a_report_of_an_all_refused_run_is_written_without_library_warnings(bag_paths, tmp_path):
    class Refusal:
        ok, chunk, refusal = False, None, "image /cameras/top/image_raw is 0.5 s old"

    class RefusingPolicy:
        joint_names = tuple(SO101_JOINTS)

        def infer(self, obs, now):
            return Refusal()

    result = evaluate_bag(bag_paths["mcap"], RefusingPolicy(), settings(stride=10), progress=False)
    assert not result.records and result.refusals == {
        "image /cameras/top/image_raw is N s old": result.samples
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_report(result, tmp_path / "r")
    assert "refused: " in (tmp_path / "r" / "report.md").read_text()
