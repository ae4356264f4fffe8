"""Replay evaluator: the live policy's ActionChunks during bag replay, in the ``smolvla-eval`` report format.

Run it with ``use_sim_time:=true`` next to the policy node and the executor (shadow mode) while a bag plays
with ``/clock`` (``smolvla-play`` or ``ros2 bag play --clock``). It collects:

- ``/smolvla/action_chunk``: every chunk (stamp, dt, positions in rad, measured inference latency, task);
- the ground-truth topic (``/joint_commands`` from the bag, or ``/leader/joint_states``);
- the executor's shadow commands (``/smolvla_executor/shadow_command``): what would have been sent, compared
  with the recorded commands as an extra ``executor`` section;
- ``/smolvla/executor_status``: idle ticks and the executor's own boundary-jump measurement.

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

from smolvla_msgs.msg import ActionChunk, ExecutorStatus
from smolvla_policy import bags
from smolvla_policy.evaluation import EvaluationResult, make_records, write_report
from smolvla_policy.metrics import compute_metrics
from smolvla_policy.runtime import Chunk
from so100_driver.node_main import run_node


@dataclass
class _Received:
    """A message as :func:`smolvla_policy.bags.joint_series` reads it (duck-typed on rclpy messages)."""

    topic: str
    msgtype: str
    log_time_ns: int
    msg: object


def _seconds(value) -> float:
    return value.sec + value.nanosec * 1e-9


def chunk_from_msg(msg: ActionChunk) -> Chunk:
    """An ActionChunk message as a runtime :class:`Chunk` (rad; action i at stamp + i * dt)."""
    positions = np.array([list(p.positions) for p in msg.trajectory.points], dtype=np.float64)
    return Chunk(
        joint_names=list(msg.trajectory.joint_names),
        positions=positions.reshape(len(msg.trajectory.points), len(msg.trajectory.joint_names)),
        dt=_seconds(msg.dt),
        stamp=_seconds(msg.header.stamp),
        task=msg.task,
        inference_start=_seconds(msg.inference_start),
        latency=_seconds(msg.inference_latency),
        observation_age=_seconds(msg.inference_start) - _seconds(msg.header.stamp),
        checkpoint_actions=positions,
    )


class ReplayEvaluatorNode(Node):
    def __init__(self, **kwargs):
        super().__init__("smolvla_replay_evaluator", **kwargs)
        self.declare_parameter("out_dir", "reports/replay")
        self.declare_parameter("ground_truth_topic", "/joint_commands")
        self.declare_parameter("ground_truth_type", "JointTrajectory")
        self.declare_parameter("chunk_topic", "/smolvla/action_chunk")
        self.declare_parameter("shadow_topic", "/smolvla_executor/shadow_command")
        self.declare_parameter("executor_status_topic", "/smolvla/executor_status")
        self.declare_parameter("joint_names", list(bags.SO101_JOINTS))
        self.declare_parameter("bag", "")  # informative: the bag being replayed, named in the report
        self.declare_parameter("plots", True)
        self.out_dir = Path(self.get_parameter("out_dir").value)
        self.joint_names = list(self.get_parameter("joint_names").value)
        self.gt_topic = self.get_parameter("ground_truth_topic").value
        gt_type = self.get_parameter("ground_truth_type").value
        if gt_type not in ("JointTrajectory", "JointState"):
            raise ValueError(
                f"parameter ground_truth_type is {gt_type!r}; expected JointTrajectory or JointState"
            )
        self._lock = threading.Lock()
        self.chunks: dict[int, Chunk] = {}  # observation stamp (ns) -> first chunk for it
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
        self.create_subscription(
            ActionChunk, self.get_parameter("chunk_topic").value, self._on_chunk, reliable
        )
        if gt_type == "JointTrajectory":  # commands are published reliable (the executor, the bag player)
            self.create_subscription(
                JointTrajectory, self.gt_topic, self._on_truth(bags.JOINT_TRAJECTORY), reliable
            )
        else:
            self.create_subscription(JointState, self.gt_topic, self._on_truth(bags.JOINT_STATE), sensor)
        self.create_subscription(
            JointTrajectory, self.get_parameter("shadow_topic").value, self._on_shadow, reliable
        )
        self.create_subscription(
            ExecutorStatus, self.get_parameter("executor_status_topic").value, self._on_status, reliable
        )
        self.create_service(Trigger, "~/write_report", self._on_write_report)
        self.report_path: Path | None = None
        self.policy_id = ""

    # ---------------------------------------------------------------------------------------- callbacks

    def _on_chunk(self, msg: ActionChunk) -> None:
        chunk = chunk_from_msg(msg)
        key = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
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
            bag=self.get_parameter("bag").value or "live replay",
            policy_id=self.policy_id or "live policy node",
            joint_names=self.joint_names,
            records=make_records(chunks, truth),
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

    def write(self) -> Path:
        self.report_path = write_report(
            self.result(), self.out_dir, plots=bool(self.get_parameter("plots").value)
        )
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
