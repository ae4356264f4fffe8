"""Evaluation metrics on small hand-made chunks whose expected values are worked out in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smolvla_policy.metrics import ChunkRecord, boundary_jumps, compute_metrics, gripper_agreement

NAMES = ["a", "gripper"]


def record(stamp, predicted, truth, latency=0.1):
    return ChunkRecord(stamp, 0.1, np.array(predicted, float), np.array(truth, float), latency)


def test_errors_by_joint_and_horizon_step():
    # chunk 1 errors: step0 (0.1, 0), step1 (0.3, 0); chunk 2: step0 (0.2, 0), step1 (no ground truth)
    records = [
        record(0.0, [[1.1, 0], [2.3, 0]], [[1.0, 0], [2.0, 0]]),
        record(1.0, [[0.8, 0], [5.0, 0]], [[1.0, 0], [np.nan, np.nan]]),
    ]
    m = compute_metrics(records, NAMES, gripper_joint=None)
    assert m["mae"]["a"] == pytest.approx((0.1 + 0.3 + 0.2) / 3)
    assert m["rmse"]["a"] == pytest.approx(math.sqrt((0.01 + 0.09 + 0.04) / 3))
    assert m["mae"]["all"] == pytest.approx((0.1 + 0.3 + 0.2) / 6)
    assert np.array(m["mae_by_step"], float)[:, 0] == pytest.approx([0.15, 0.3])
    assert m["compared_actions"] == 3 and m["actions_without_ground_truth"] == 1
    assert m["max_abs_error"] == pytest.approx(0.3)
    assert m["latency"]["mean"] == pytest.approx(0.1) and m["latency"]["count"] == 2


def test_gripper_agreement_uses_the_recorded_midpoint():
    # recorded gripper 0.0 / 1.0 -> threshold 0.5; predictions 0.6 (open, wrong), 0.9 (open, right)
    records = [record(0.0, [[0, 0.6], [0, 0.9]], [[0, 0.0], [0, 1.0]])]
    g = gripper_agreement(records, 1)
    assert g["threshold"] == 0.5 and g["agreement"] == 0.5 and g["steps"] == 2
    assert gripper_agreement(records, 1, threshold=0.7)["agreement"] == 1.0


def test_boundary_jumps_compare_the_new_chunk_with_the_old_plan():
    # old plan: a = 0, 1, 2, 3 at t = 0 .. 0.3; the new chunk at 0.15 starts at a = 2.0, the old plan at 1.5
    old = record(0.0, [[0, 0], [1, 0], [2, 0], [3, 0]], np.zeros((4, 2)))
    new = record(0.15, [[2.0, 0.25], [2.5, 0.25]], np.zeros((2, 2)))
    later = record(5.0, [[0, 0]], np.zeros((1, 2)))  # outside the previous plan: no boundary
    assert boundary_jumps([old, new, later]) == pytest.approx([0.5])


def test_smoothness_is_the_mean_absolute_second_difference():
    # a: 0, 1, 4 -> second difference 2; gripper constant -> 0; mean over joints 1.0
    m = compute_metrics([record(0.0, [[0, 0], [1, 0], [4, 0]], [[0, 0], [1, 0], [2, 0]])], NAMES)
    assert m["smoothness"]["predicted"]["mean_abs_second_difference"] == pytest.approx(1.0)
    assert m["smoothness"]["predicted"]["max_step"] == pytest.approx(3.0)
    assert m["smoothness"]["recorded"]["mean_abs_second_difference"] == pytest.approx(0.0)


def test_no_chunks_gives_an_empty_report():
    assert compute_metrics([], NAMES) == {"chunks": 0, "joint_names": NAMES, "units": "rad"}
