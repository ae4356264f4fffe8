"""Offline evaluation of a SmolVLA policy on recorded bags (``smolvla-eval``); ROS-free, CPU or GPU.

- :mod:`~smolvla_policy.evaluation.evaluate`: sample observations from a bag, run the policy, pair each chunk
  with what was commanded (:func:`evaluate_bag`);
- :mod:`~smolvla_policy.evaluation.policies`: the checkpoint with seeded noise (reproducible, and the same
  chunk offline as in live replay), or the recorded commands as a sanity check;
- :mod:`~smolvla_policy.evaluation.report`: report.json / .md / .html and plots;
- :mod:`~smolvla_policy.evaluation.cli`: the command line.
"""

from smolvla_policy.evaluation.cli import main, parse_cameras
from smolvla_policy.evaluation.evaluate import (
    DEFAULT_STRIDE,
    EvalSettings,
    EvaluationResult,
    evaluate_bag,
    make_record,
    make_records,
    read_ground_truth,
)
from smolvla_policy.evaluation.policies import (
    GroundTruthPolicy,
    SeededNoiseModel,
    input_seed,
    load_runtime_policy,
)
from smolvla_policy.evaluation.report import write_report

__all__ = [
    "DEFAULT_STRIDE",
    "EvalSettings",
    "EvaluationResult",
    "GroundTruthPolicy",
    "SeededNoiseModel",
    "evaluate_bag",
    "input_seed",
    "load_runtime_policy",
    "main",
    "make_record",
    "make_records",
    "parse_cameras",
    "read_ground_truth",
    "write_report",
]
