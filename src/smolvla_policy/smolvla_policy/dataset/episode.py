"""One bag -> one episode: the frame grid, and at each frame the newest message of every input.

Frames lie on a fixed ``fps`` grid from the first time every input has a message to the last time the joint
states and the actions both have one; at frame time ``t`` every feature is the newest message logged at or
before ``t``. Images go straight to the video writers; states, actions and tasks are returned.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smolvla_common import bags
from smolvla_common.bags import BagError, BagReader
from smolvla_common.image_conversion import msg_to_rgb
from smolvla_policy.dataset.settings import ExportSettings
from smolvla_policy.dataset.stats import Stats, downsample, episode_image_stats, sampled_frame_indices
from smolvla_policy.dataset.video import VideoWriter


@dataclass
class Episode:
    """What one bag contributed (frames written directly to the encoders)."""

    bag: str
    states: np.ndarray  # (T, J) float32 in dataset units (as stored)
    actions: np.ndarray  # (T, J) float32
    tasks: list[str]
    image_stats: dict[str, Stats] = field(default_factory=dict)  # camera -> statistics of sampled frames
    video_from: dict[str, int] = field(default_factory=dict)  # camera -> index of its first video frame


def make_converter(settings: ExportSettings) -> Any:
    """The policy runtime's ``UnitConverter`` from ROS radians to the dataset's units."""
    from smolvla_policy.runtime import UnitConverter, resolve_joint_units

    calibration = None
    if settings.calibration_file:
        from smolvla_common.calibration import load_calibration

        calibration = load_calibration(settings.calibration_file)
    names = list(settings.joint_names)
    units = resolve_joint_units(settings.units, names, settings.gripper_joint, settings.joint_units)
    try:
        return UnitConverter(names, units, calibration)
    except ValueError as exc:
        hint = "pass --calibration FILE, or --joint-units for an arm without one (the simulated arm: deg x6)"
        raise ValueError(f"units {units}: {exc} ({hint})") from exc


def joint_positions(msg: Any, msgtype: str, names: Sequence[str], where: str) -> np.ndarray:
    """Positions of ``names`` in a JointState, or in the first point of a JointTrajectory."""
    if msgtype == bags.JOINT_TRAJECTORY:
        if not msg.points:
            raise BagError(f"{where}: a JointTrajectory without points")
        have, values = list(msg.joint_names), msg.points[0].positions
    else:
        have, values = list(msg.name), msg.position
    missing = [n for n in names if n not in have]
    if missing or len(values) != len(have):
        raise BagError(
            f"{where} ({msgtype}): lacks joints {missing} or has mismatched positions (names {have})"
        )
    return np.array([float(values[have.index(n)]) for n in names])


def read_episode_metadata(bag_path: str | Path) -> dict:
    """Episode metadata written by the recorder (``episode.json`` next to ``metadata.yaml``), or {}."""
    sidecar = Path(bag_path) / "episode.json"
    if sidecar.is_file():
        try:
            return json.loads(sidecar.read_text())
        except json.JSONDecodeError as exc:
            raise BagError(f"bag {bag_path}: episode.json is not valid JSON ({exc})") from exc
    return {}


def camera_name(topic: str) -> str:
    """A camera name from its topic: ``/cameras/<name>/...`` -> name, else the topic's words joined by _."""
    parts = [p for p in topic.strip("/").split("/") if p]
    if len(parts) >= 2 and parts[0] == "cameras":
        return parts[1]
    words = [p for p in parts if p not in ("image_raw", "image", "compressed")] or parts
    return "_".join(words)


def discover_cameras(bag_paths: Sequence[str | Path]) -> dict[str, str]:
    """Every image topic of the bags, camera name -> topic (sorted by name); all bags must have the same."""
    found: dict[str, set[str]] = {}
    for path in bag_paths:
        with BagReader(path) as bag:
            found[str(path)] = {t for t, msgtype in bag.topics.items() if msgtype in bags.IMAGE_TYPES}
    topics = set().union(*found.values())
    partial = {path: sorted(topics - have) for path, have in found.items() if topics - have}
    if partial:
        raise BagError(f"bags lack image topics others have: {partial}; choose cameras with --cameras")
    cameras: dict[str, str] = {}
    for topic in sorted(topics):
        name = camera_name(topic)
        if name in cameras:
            raise BagError(
                f"image topics {cameras[name]} and {topic} both map to camera {name!r}; use --cameras"
            )
        cameras[name] = topic
    return dict(sorted(cameras.items()))


def episode_task(bag: BagReader, settings: ExportSettings) -> str:
    """The task of every frame: ``settings.task``, else the recorded one; "" means read the instructions."""
    if settings.task.strip():
        return settings.task.strip()
    return read_episode_metadata(bag.path).get("task", "").strip()


def _wanted_topics(settings: ExportSettings) -> dict[str, list[str]]:
    """Topic -> accepted message types of every input that must be in the bag."""
    wanted = {
        settings.joint_state_topic: [bags.JOINT_STATE],
        settings.action_topic: [bags.JOINT_TRAJECTORY, bags.JOINT_STATE],
    }
    wanted.update({t: list(bags.IMAGE_TYPES) for t in settings.camera_topics.values()})
    return wanted


def _topics_to_read(
    bag: BagReader, settings: ExportSettings, wanted: Mapping[str, Any], fixed_task: str
) -> list[str]:
    """The inputs, plus the instruction topic when the bag has one; without either task source, an error."""
    topics = list(wanted)
    if settings.instruction_topic in bag.topics:
        bag.require({settings.instruction_topic: [bags.STRING]}, "the task")
        topics.append(settings.instruction_topic)
    elif not fixed_task:
        raise BagError(
            f"bag {bag.path}: no {settings.instruction_topic} topic and no recorded task; pass --task"
        )
    return topics


def frame_grid(bag: BagReader, wanted: Mapping[str, Any], settings: ExportSettings) -> np.ndarray:
    """Frame times (ns): from the time every input has a message to the last joint state / action."""
    dt = 1.0 / settings.fps
    first: dict[str, int | None] = {}
    last: dict[str, int] = {}
    for conn in bag.reader.connections:
        if conn.topic in wanted:
            first.setdefault(conn.topic, None)
    for conn, log_time, _ in bag.raw_messages(list(wanted)):
        if first.get(conn.topic) is None:
            first[conn.topic] = log_time
        last[conn.topic] = log_time
    start = max(first.values())
    end = min(last[settings.joint_state_topic], last[settings.action_topic])
    if end < start:
        raise BagError(f"bag {bag.path}: the inputs never overlap in time (nothing to export)")
    count = int(np.floor((end - start) * 1e-9 / dt + 1e-6)) + 1
    return start + np.round(np.arange(count) * dt * 1e9).astype(np.int64)


class _FrameSampler:
    """Builds the frames of one bag in log-time order, from the newest message of each topic."""

    def __init__(
        self, bag: BagReader, settings: ExportSettings, fixed_task: str, videos: Mapping[str, VideoWriter]
    ):
        self.bag, self.settings, self.fixed_task, self.videos = bag, settings, fixed_task, videos
        self.camera_of = {topic: camera for camera, topic in settings.camera_topics.items()}
        self.latest: dict[str, tuple[Any, bytes]] = {}  # topic -> (connection, raw)
        self.states: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.tasks: list[str] = []
        self.sampled: set[int] = set()  # frames whose images enter the image statistics
        self.samples: dict[str, list[np.ndarray]] = {camera: [] for camera in settings.camera_topics}

    def run(self, topics: Sequence[str], frame_times: np.ndarray) -> None:
        """Emit each frame once every message logged up to its time has been read."""
        k, count = 0, len(frame_times)
        self.sampled = set(sampled_frame_indices(count))
        for conn, log_time, raw in self.bag.raw_messages(topics):
            while k < count and log_time > frame_times[k]:
                self._emit(int(frame_times[k]))
                k += 1
            self.latest[conn.topic] = (conn, raw)
        while k < count:
            self._emit(int(frame_times[k]))
            k += 1

    def _emit(self, frame_time: int) -> None:
        """Append the frame at ``frame_time`` (ns): state, action, task and one image per camera."""
        s, where = self.settings, f"bag {self.bag.path}"
        js = self.bag.decode(*self.latest[s.joint_state_topic])
        act_conn, act_raw = self.latest[s.action_topic]
        act = self.bag.decode(act_conn, act_raw)
        self.states.append(
            joint_positions(js, bags.JOINT_STATE, s.joint_names, f"{where}: {s.joint_state_topic}")
        )
        self.actions.append(
            joint_positions(act, act_conn.msgtype, s.joint_names, f"{where}: {s.action_topic}")
        )
        self.tasks.append(self._task(frame_time, where))
        sampled = len(self.states) - 1 in self.sampled
        for topic, camera in self.camera_of.items():
            rgb = msg_to_rgb(self.bag.decode(*self.latest[topic]))
            self.videos[camera].add(rgb)
            if sampled:
                self.samples[camera].append(downsample(rgb).copy())

    def _task(self, frame_time: int, where: str) -> str:
        """The fixed task, else the newest instruction (an error when there is none yet)."""
        if self.fixed_task:
            return self.fixed_task
        instruction = self.latest.get(self.settings.instruction_topic)
        text = self.bag.decode(*instruction).data.strip() if instruction else ""
        if not text:
            raise BagError(f"{where}: frame at {frame_time * 1e-9:.3f} s has no instruction yet; pass --task")
        return text


def export_episode(
    bag_path: str | Path, settings: ExportSettings, converter: Any, videos: Mapping[str, VideoWriter]
) -> Episode:
    """Read one bag and append its frames to the video writers; returns states, actions and tasks."""
    with BagReader(bag_path) as bag:
        wanted = _wanted_topics(settings)
        bag.require(wanted, "the dataset export")
        fixed_task = episode_task(bag, settings)
        topics = _topics_to_read(bag, settings, wanted, fixed_task)
        frame_times = frame_grid(bag, wanted, settings)
        sampler = _FrameSampler(bag, settings, fixed_task, videos)
        sampler.run(topics, frame_times)
    return Episode(
        bag=str(bag_path),
        states=converter.to_checkpoint(np.array(sampler.states)).astype(np.float32),
        actions=converter.to_checkpoint(np.array(sampler.actions)).astype(np.float32),
        tasks=sampler.tasks,
        image_stats={camera: episode_image_stats(frames) for camera, frames in sampler.samples.items()},
    )
