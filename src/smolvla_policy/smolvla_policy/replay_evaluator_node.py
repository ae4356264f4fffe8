"""Replay evaluator: the live policy's ActionChunks during bag replay, in the ``smolvla-eval`` report format.

Run it with ``use_sim_time:=true`` next to the policy node and the executor (shadow mode) while a bag plays
with ``/clock`` (``smolvla-play`` or ``ros2 bag play --clock``). It collects:

- ``smolvla/action_chunk``: every chunk (stamp, dt, positions in rad, measured inference latency, task);
- the ground truth ``ground_truth`` (remap it: ``joint_commands`` from the bag by default, or
  ``leader/joint_states`` with ``ground_truth_type: JointState``);
- the executor's shadow commands (``executor/shadow_command``, the executor node's private topic): what
  would have been sent, compared with the recorded commands as an extra ``executor`` section;
- ``smolvla/executor_status``: idle ticks and the executor's own boundary-jump measurement.

Topics are relative: run the replay graph in a namespace, or remap them.

``~/write_report`` (std_srvs/Trigger) writes ``report.json`` / ``.md`` / ``.html`` + plots to ``out_dir`` with
the same metrics as the offline path (:mod:`smolvla_policy.evaluation`); it is also written on shutdown when
chunks were received. Chunks with the same observation stamp as an earlier one are kept once (the first).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from smolvla_common import bags
from smolvla_common.chunk import chunk_from_msg
from smolvla_common.joints import SO101_JOINTS
from smolvla_common.node_main import run_node
from smolvla_common.parameters import declare_parameters, require
from smolvla_common.timeutil import nanoseconds, seconds
from smolvla_msgs.msg import ActionChunk, ExecutorStatus
from smolvla_policy.evaluation import EvaluationResult, make_record, write_report
from smolvla_policy.metrics import ChunkRecord, compute_metrics

PARAMETERS = {
    "out_dir": "reports/replay",
    "ground_truth_type": "JointTrajectory",
    "joint_names": list(SO101_JOINTS),
    "bag": "",  # informative: the bag being replayed, named in the report
    "plots": True,
}
GROUND_TRUTH_TYPES = {
    "JointTrajectory": (JointTrajectory, bags.JOINT_TRAJECTORY),
    "JointState": (JointState, bags.JOINT_STATE),
}


@dataclass
class _Received:
    """A message as :func:`smolvla_common.bags.joint_series` reads it (duck-typed on rclpy messages)."""

    topic: str
    msgtype: str
    log_time_ns: int
    msg: object


@dataclass
class _LiveChunk:
    """A chunk as published: plain arrays plus the latency and task it carries."""

    joint_names: tuple[str, ...]
    positions: np.ndarray
    stamp: float
    dt: float
    latency: float
    task: str


class ReplayEvaluatorNode(Node):
    def __init__(self, **kwargs):
        super().__init__(kwargs.pop("node_name", "replay_evaluator"), **kwargs)
        p = declare_parameters(self, PARAMETERS)
        require(
            p["ground_truth_type"] in GROUND_TRUTH_TYPES,
            "ground_truth_type",
            "JointTrajectory or JointState",
            p["ground_truth_type"],
        )
        self.params = p
        self.out_dir = Path(p["out_dir"])
        self.joint_names = list(p["joint_names"])
        self._lock = threading.Lock()
        self.chunks: dict[int, _LiveChunk] = {}  # observation stamp (ns) -> first chunk for it
        self.truth: list[_Received] = []
        self.shadow: list[_Received] = []
        self.status: ExecutorStatus | None = None
        self.wall_start: float | None = None  # wall times of the first and the last chunk received
        self.wall_last = 0.0
        reliable = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE
        )
        sensor = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.BEST_EFFORT
        )
        self.create_subscription(ActionChunk, "smolvla/action_chunk", self._on_chunk, reliable)
        gt_class, gt_type = GROUND_TRUTH_TYPES[p["ground_truth_type"]]
        # commands are published reliable (the executor, the bag player), joint states best effort
        qos = reliable if gt_class is JointTrajectory else sensor
        self.gt_topic = "joint_commands" if gt_class is JointTrajectory else "leader/joint_states"
        self.gt_topic = self.resolve_topic_name(self.gt_topic)
        self.create_subscription(gt_class, self.gt_topic, self._on_truth(gt_type), qos)
        self.create_subscription(JointTrajectory, "executor/shadow_command", self._on_shadow, reliable)
        self.create_subscription(ExecutorStatus, "smolvla/executor_status", self._on_status, reliable)
        self.create_service(Trigger, "~/write_report", self._on_write_report)
        self.report_path: Path | None = None
        self.policy_id = ""

    # ---------------------------------------------------------------------------------------- callbacks

    def _on_chunk(self, msg: ActionChunk) -> None:
        plain = chunk_from_msg(msg)
        chunk = _LiveChunk(
            plain.joint_names,
            plain.positions,
            plain.stamp,
            plain.dt,
            seconds(msg.inference_latency),
            msg.task,
        )
        key = nanoseconds(msg.header.stamp)
        with self._lock:
            if self.wall_start is None:
                self.wall_start = time.monotonic()
            self.wall_last = time.monotonic()
            self.chunks.setdefault(key, chunk)
            self.policy_id = msg.policy_id

    def _on_truth(self, msgtype: str):
        def callback(msg) -> None:
            with self._lock:
                self.truth.append(_Received(self.gt_topic, msgtype, self.get_clock().now().nanoseconds, msg))

        return callback

    def _on_shadow(self, msg: JointTrajectory) -> None:
        with self._lock:
            self.shadow.append(
                _Received("shadow", bags.JOINT_TRAJECTORY, self.get_clock().now().nanoseconds, msg)
            )

    def _on_status(self, msg: ExecutorStatus) -> None:
        with self._lock:
            self.status = msg

    # ---------------------------------------------------------------------------------------- report

    def result(self) -> EvaluationResult:
        """The collected chunks against the collected ground truth, as an offline-style result."""
        with self._lock:
            chunks = [self.chunks[k] for k in sorted(self.chunks)]
            truth_msgs, shadow_msgs, status = list(self.truth), list(self.shadow), self.status
            wall = self.wall_last - self.wall_start if self.wall_start is not None else 0.0
        if len(truth_msgs) < 2:
            raise ValueError(f"fewer than 2 ground-truth messages received on {self.gt_topic}")
        truth = bags.joint_series(truth_msgs, self.joint_names, self.gt_topic)
        result = EvaluationResult(
            bag=self.params["bag"] or "live replay",
            policy_id=self.policy_id or "live policy node",
            joint_names=self.joint_names,
            records=[self._record(c, truth) for c in chunks],
            truth=truth,
            samples=len(chunks),
            wall_time_s=wall,
            bag_duration_s=float(truth.times[-1] - truth.times[0]),
            mode="live replay",
        )
        result.metrics = compute_metrics(result.records, self.joint_names)
        executor: dict = {}
        if shadow_msgs:
            shadow = bags.joint_series(shadow_msgs, self.joint_names, "shadow")
            errors = np.abs(shadow.positions - truth.at(shadow.times))
            valid = np.isfinite(errors).all(axis=1)
            executor["shadow_commands"] = len(shadow.times)
            executor["shadow_mae"] = float(errors[valid].mean()) if valid.any() else None
        if status is not None:
            executor.update(
                idle_ticks=int(status.idle_ticks),
                executed_steps=int(status.executed_steps),
                chunks_received=int(status.chunks_received),
                chunks_dropped=int(status.chunks_dropped),
                max_boundary_jump=float(status.max_boundary_jump),
            )
        if executor:
            result.metrics["executor"] = executor
        return result

    @staticmethod
    def _record(c: _LiveChunk, truth) -> ChunkRecord:
        return make_record(c.joint_names, c.positions, c.stamp, c.dt, c.latency, c.task, truth)

    def write(self) -> Path:
        self.report_path = write_report(self.result(), self.out_dir, plots=self.params["plots"])
        self.get_logger().info(f"replay report written to {self.report_path.parent}")
        return self.report_path

    def _on_write_report(self, _request, response):
        try:
            response.message = str(self.write())
            response.success = True
        except Exception as exc:  # a report that cannot be made is an answer, not a crash
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
        return response

    def destroy_node(self) -> None:
        if self.chunks and self.report_path is None:
            try:
                self.write()
            except Exception as exc:
                self.get_logger().error(f"could not write the replay report: {exc}")
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    return run_node(ReplayEvaluatorNode, "replay_evaluator_node", argv)


if __name__ == "__main__":
    sys.exit(main())
