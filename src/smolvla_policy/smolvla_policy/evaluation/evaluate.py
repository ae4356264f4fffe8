"""Running a policy on the observations of a recorded bag and comparing its chunks with what was commanded.

1. The bag is read in log-time order. Every ``stride``-th joint state is a sample time ``t``; the observation
   at ``t`` is assembled exactly as the policy node does (:func:`~smolvla_policy.runtime.observation.
   assemble_observation`): the newest message of each input topic received at or before ``t``.
2. The policy (:class:`smolvla_policy.runtime.PolicyRuntime`, or anything with the same ``infer`` method, such
   as :class:`~smolvla_policy.evaluation.policies.GroundTruthPolicy`) turns it into a chunk in radians;
   refusals are counted with their reasons.
3. Each chunk is compared with what was really commanded afterwards: the ground-truth topic resampled at
   the chunk's action times ``stamp + i * dt`` (:mod:`smolvla_policy.metrics`).
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smolvla_common import bags
from smolvla_common.bags import BagError, BagReader, JointSeries
from smolvla_common.joints import GRIPPER
from smolvla_common.timeutil import header_nanoseconds
from smolvla_policy.metrics import ChunkRecord, compute_metrics
from smolvla_policy.runtime.observation import assemble_observation

DEFAULT_STRIDE = 10


@dataclass
class EvalSettings:
    """Which topics to read and how to sample the bag."""

    camera_topics: dict[str, str]  # camera name -> image topic
    joint_state_topic: str = "/joint_states"
    ground_truth_topic: str = "/joint_commands"
    instruction_topic: str = "/instruction"
    task: str = ""  # used while the bag has no instruction yet (like the node's task parameter)
    stride: int = DEFAULT_STRIDE  # one sample every `stride` joint states
    max_samples: int = 0  # 0: no limit
    gripper_joint: str = GRIPPER
    gripper_threshold: float | None = None


@dataclass
class EvaluationResult:
    bag: str
    policy_id: str
    joint_names: list[str]
    records: list[ChunkRecord]
    truth: JointSeries
    refusals: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    wall_time_s: float = 0.0
    bag_duration_s: float = 0.0
    mode: str = "offline"
    metrics: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "bag": self.bag,
            "policy": self.policy_id,
            "mode": self.mode,
            "samples": self.samples,
            "chunks": len(self.records),
            "refused": sum(self.refusals.values()),
            "refusal_reasons": self.refusals,
            "bag_duration_s": self.bag_duration_s,
            "wall_time_s": self.wall_time_s,
            "real_time_factor": (self.bag_duration_s / self.wall_time_s) if self.wall_time_s > 0 else None,
        }


def read_ground_truth(bag: BagReader, topic: str, joint_names: Sequence[str]) -> JointSeries:
    """The recorded commands (JointTrajectory or JointState topic) as a time series, in rad."""
    bag.require({topic: [bags.JOINT_TRAJECTORY, bags.JOINT_STATE]}, "the ground truth")
    series = bags.joint_series(bag.read_all([topic])[topic], joint_names, topic, str(bag.path))
    if len(series.times) < 2:
        raise BagError(f"bag {bag.path}: ground-truth topic {topic} has fewer than 2 usable samples")
    return series


def make_record(
    joint_names: Sequence[str],
    positions: np.ndarray,
    stamp: float,
    dt: float,
    latency: float,
    task: str,
    truth: JointSeries,
) -> ChunkRecord:
    """One chunk paired with the ground truth at its action times (NaN outside the recording)."""
    joint_names = list(joint_names)
    order = [joint_names.index(n) for n in truth.joint_names]
    predicted = np.asarray(positions, dtype=np.float64)[:, order]
    times = stamp + np.arange(len(predicted)) * dt
    return ChunkRecord(stamp, dt, predicted, truth.at(times), latency, task)


def make_records(chunks: Sequence[Any], truth: JointSeries) -> list[ChunkRecord]:
    """:func:`make_record` of runtime chunks (:class:`~smolvla_policy.runtime.InferredChunk`)."""
    return [make_record(c.joint_names, c.positions, c.stamp, c.dt, c.latency, c.task, truth) for c in chunks]


class BagSamples:
    """The inputs of the observations to evaluate, from a bag in log-time order.

    A sample is due at every ``stride``-th joint state (or at the joint states whose stamps are in
    ``sample_times``) and is taken once every message logged up to it has been read; messages are decoded
    only when a sample uses them. Iterating yields ``(joint_state, images by camera, instruction)``.
    """

    def __init__(self, bag: BagReader, settings: EvalSettings, sample_times: Sequence[float] | None = None):
        self.bag = bag
        self.settings = settings
        # matched to the microsecond: float seconds of Unix-time stamps are not exact to the nanosecond
        self.wanted = None if sample_times is None else {round(t * 1e6) for t in sample_times}
        self.camera_of_topic = {topic: camera for camera, topic in settings.camera_topics.items()}
        self.latest: dict[str, tuple[Any, bytes]] = {}  # topic -> (connection, raw)
        self.decoded: dict[str, tuple[bytes, Any]] = {}

    def total(self) -> int:
        s = self.settings
        count = (
            len(self.wanted)
            if self.wanted is not None
            else math.ceil(self.bag.message_count(s.joint_state_topic) / max(1, s.stride))
        )
        return min(count, s.max_samples) if s.max_samples else count

    def _decode(self, topic: str) -> Any:
        conn, raw = self.latest[topic]
        cached = self.decoded.get(topic)
        if cached is None or cached[0] is not raw:
            self.decoded[topic] = (raw, self.bag.decode(conn, raw))
        return self.decoded[topic][1]

    def _sample(self) -> tuple[Any, dict[str, Any], str | None]:
        s = self.settings
        images = {
            self.camera_of_topic[t]: self._decode(t) for t in s.camera_topics.values() if t in self.latest
        }
        instruction = self._decode(s.instruction_topic).data if s.instruction_topic in self.latest else None
        return self._decode(s.joint_state_topic), images, instruction

    def _due(self, index: int) -> bool:
        if self.wanted is not None:
            return (
                round(header_nanoseconds(self._decode(self.settings.joint_state_topic)) / 1000) in self.wanted
            )
        return index % max(1, self.settings.stride) == 0

    def __iter__(self) -> Iterator[tuple[Any, dict[str, Any], str | None]]:
        s = self.settings
        topics = [s.joint_state_topic, *s.camera_topics.values()]
        if s.instruction_topic in self.bag.topics:
            topics.append(s.instruction_topic)
        pending: int | None = None  # log time of a due sample, taken once every message up to it is in
        joint_index = 0
        for conn, log_time, raw in self.bag.raw_messages(topics):
            if pending is not None and log_time > pending:
                yield self._sample()
                pending = None
            self.latest[conn.topic] = (conn, raw)
            if conn.topic == s.joint_state_topic:
                if self._due(joint_index):
                    pending = log_time
                joint_index += 1
        if pending is not None:
            yield self._sample()


def check_bag(bag: BagReader, settings: EvalSettings) -> None:
    """Raise :class:`BagError` naming the bag and topic when the bag lacks what the evaluation reads."""
    wanted = {settings.joint_state_topic: [bags.JOINT_STATE]}
    wanted.update({topic: list(bags.IMAGE_TYPES) for topic in settings.camera_topics.values()})
    bag.require(wanted, "the policy's observations")
    if settings.instruction_topic in bag.topics:
        bag.require({settings.instruction_topic: [bags.STRING]}, "the instruction")
    elif not settings.task.strip():
        raise BagError(
            f"bag {bag.path}: no instruction topic {settings.instruction_topic} and no task given; "
            "pass --task 'what the robot was asked to do'"
        )


def evaluate_bag(
    bag_path: str | Path,
    policy: Any,
    settings: EvalSettings,
    policy_id: str = "",
    progress: bool = True,
    sample_times: Sequence[float] | None = None,
) -> EvaluationResult:
    """Run ``policy`` (``infer(obs, now)`` like PolicyRuntime) on observations sampled from a bag.

    ``sample_times`` (s, joint-state stamps): evaluate at the joint states with exactly these stamps instead
    of every ``stride``-th one (used to compare with live replay).
    """
    started = time.perf_counter()
    chunks: list[Any] = []
    refusals: dict[str, int] = {}
    samples = 0
    with BagReader(bag_path) as bag:
        check_bag(bag, settings)
        truth = read_ground_truth(bag, settings.ground_truth_topic, policy.joint_names)
        sampler = BagSamples(bag, settings, sample_times)
        bar = _progress(sampler.total(), progress)
        for joint_state, images, instruction in sampler:
            samples += 1
            chunk, reason = _infer(policy, joint_state, images, instruction, settings.camera_topics)
            if chunk is not None:
                chunks.append(chunk)
            else:
                key = _reason_key(reason)
                refusals[key] = refusals.get(key, 0) + 1
            if bar is not None:
                bar.update(1)
            if settings.max_samples and samples >= settings.max_samples:
                break
        if bar is not None:
            bar.close()
        duration = (bag.end_ns - bag.start_ns) * 1e-9
    result = EvaluationResult(
        bag=str(bag_path),
        policy_id=policy_id,
        joint_names=list(policy.joint_names),
        records=make_records(chunks, truth),
        truth=truth,
        refusals=refusals,
        samples=samples,
        wall_time_s=time.perf_counter() - started,
        bag_duration_s=duration,
    )
    result.metrics = compute_metrics(
        result.records, result.joint_names, settings.gripper_joint, settings.gripper_threshold
    )
    return result


def _infer(policy: Any, joint_state: Any, images: dict, instruction: str | None, camera_topics: dict):
    """(the chunk, "") or (None, why the observation was refused)."""
    obs, reason = assemble_observation(joint_state, images, instruction, camera_topics)
    if obs is None:
        return None, reason
    result = policy.infer(obs, now=obs.stamp)
    return (result.chunk, "") if result.ok else (None, result.refusal)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="obs", desc="evaluating", file=sys.stderr, dynamic_ncols=True)


def _reason_key(reason: str) -> str:
    """Group refusal reasons that differ only in numbers (ages, sizes)."""
    return re.sub(r"-?\d+(\.\d+)?", "N", reason or "unknown")[:200]
