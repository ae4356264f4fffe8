"""Live replay over real DDS: bag player (/clock) -> the real policy node and the executor in shadow mode,
both on use_sim_time -> the replay evaluator; its metrics must equal the offline evaluator's on the same bag.

The policy is a real tiny SmolVLA checkpoint. Its flow-matching noise is normally random per chunk; the test
wraps the running node's model in :class:`SeededNoiseModel` (the offline evaluator's noise source, a function
of seed, state and task) so both paths draw the same noise for the same observation. Camera frames are static
in this bag so the comparison does not depend on which frame had arrived when the node sampled.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

import synthetic_bags
from smolvla_common.bag_player import BagPlayer, is_latched
from smolvla_common.executor_node import ExecutorNode
from smolvla_common.joints import SO101_JOINTS
from smolvla_msgs.msg import PolicyStatus
from smolvla_policy.evaluation import EvalSettings, SeededNoiseModel, evaluate_bag, load_runtime_policy
from smolvla_policy.policy_node import PolicyNode
from smolvla_policy.replay_evaluator_node import ReplayEvaluatorNode

RANGE_MIN, RANGE_MAX = 1000, 3000  # every joint's range in the `calibration_file` fixture

CAMERAS = {"top": "/cameras/top/image_raw", "wrist": "/cameras/wrist/image_raw"}
SEED = 3


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_live_replay_matches_the_offline_evaluation(tiny_checkpoint, calibration_file, tmp_path):
    bag = synthetic_bags.write_synthetic_bag(tmp_path / "run", "mcap", duration_s=4.0, static_images=True)
    sim = Parameter("use_sim_time", value=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    nodes = []
    stop = threading.Event()
    executor = SingleThreadedExecutor(context=context)
    thread = threading.Thread(
        target=lambda: [executor.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)], daemon=True
    )
    try:
        policy = PolicyNode(
            context=context,
            parameter_overrides=[
                sim,
                Parameter("checkpoint", value=str(tiny_checkpoint)),
                Parameter("cameras", value=list(CAMERAS)),
                Parameter("calibration_file", value=str(calibration_file)),
                Parameter("warmup", value=True),  # the first inference must not be the slow one
            ],
        )
        nodes.append(policy)
        shadow_executor = ExecutorNode(
            context=context,
            parameter_overrides=[
                sim,
                Parameter("shadow", value=True),
                Parameter("start_on_launch", value=True),
            ],
        )
        nodes.append(shadow_executor)
        evaluator = ReplayEvaluatorNode(
            context=context,
            parameter_overrides=[
                sim,
                Parameter("out_dir", value=str(tmp_path / "live")),
                Parameter("bag", value=str(bag)),
            ],
        )
        nodes.append(evaluator)
        for node in nodes:
            executor.add_node(node)
        thread.start()
        wait_for(lambda: policy.state == PolicyStatus.STATE_READY, 30.0, f"policy READY ({policy.message})")
        policy.runtime.model = SeededNoiseModel(policy.runtime.model, SEED)
        player = BagPlayer(
            context=context,
            parameter_overrides=[
                Parameter("bag", value=str(bag)),
                Parameter("start_delay_s", value=0.5),
                Parameter("wait_for_subscribers_s", value=20.0),  # discovery can be slow on a busy machine
            ],
        )
        nodes.append(player)
        executor.add_node(player)
        wait_for(player.done.is_set, 60.0, "the end of the bag")
        wait_for(lambda: len(evaluator.truth) == 120, 10.0, "every recorded command at the evaluator")
        time.sleep(0.5)  # chunks for the last observations
        live = evaluator.result()
        evaluator.write()
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=5)
        executor.shutdown()
        for node in nodes:
            node.destroy_node()
        rclpy.shutdown(context=context)

    assert len(live.records) >= 3, f"only {len(live.records)} chunks during replay"
    stamps = [r.stamp for r in live.records]
    offline_policy = load_runtime_policy(
        str(tiny_checkpoint), list(CAMERAS), calibration_file=str(calibration_file), seed=SEED
    )
    direct = evaluate_bag(
        bag, offline_policy, EvalSettings(dict(CAMERAS)), progress=False, sample_times=stamps
    )
    assert [r.stamp for r in direct.records] == pytest.approx(stamps, abs=1e-9)
    for a, b in zip(live.records, direct.records, strict=True):
        assert np.allclose(a.predicted, b.predicted, atol=1e-5)
        assert np.array_equal(np.isnan(a.truth), np.isnan(b.truth))
    for name in ("all", *SO101_JOINTS):
        assert live.metrics["mae"][name] == pytest.approx(direct.metrics["mae"][name], rel=1e-4, abs=1e-6)
        assert live.metrics["rmse"][name] == pytest.approx(direct.metrics["rmse"][name], rel=1e-4, abs=1e-6)
    assert live.metrics["gripper"]["agreement"] == pytest.approx(direct.metrics["gripper"]["agreement"])
    assert live.metrics["executor"]["shadow_commands"] > 30  # the shadow executor ran on the replayed clock
    report = json.loads((tmp_path / "live" / "report.json").read_text())
    assert report["summary"]["mode"] == "live replay"
    assert report["metrics"]["mae"]["all"] == pytest.approx(live.metrics["mae"]["all"])


def test_the_instruction_is_played_latched_in_any_namespace():
    assert is_latched("/instruction") and is_latched("/left/instruction")
    assert not is_latched("/joint_states") and not is_latched("/left/instruction_text")
