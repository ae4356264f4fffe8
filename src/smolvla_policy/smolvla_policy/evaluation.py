"""Offline evaluation of a SmolVLA policy on a recorded bag (``smolvla-eval``); ROS-free, CPU or GPU.

1. The bag is read in log-time order. Every ``stride``-th joint state is a sample time ``t``; the observation
   at ``t`` is assembled exactly as the policy node does (:func:`assemble_observation`, the same checks and
   :mod:`smolvla_policy.runtime`): the newest message of each input topic received at or before ``t``
   (joint state, each camera, the instruction), images decoded with ``so100_driver.image_conversion``.
2. The policy (:class:`smolvla_policy.runtime.PolicyRuntime`, or anything with the same ``infer`` method, such
   as :class:`GroundTruthPolicy`) turns it into a chunk in radians; refusals are counted with their reasons.
3. Each chunk is compared with what was really commanded afterwards: the ground-truth topic
   (``/joint_commands`` JointTrajectory, or a JointState topic such as ``/leader/joint_states``) resampled at
   the chunk's action times ``stamp + i * dt`` (:mod:`smolvla_policy.metrics`).
4. :func:`write_report` writes ``report.json``, ``report.md``, ``report.html`` and PNG plots.

Randomness: flow matching starts from noise. :class:`SeededNoiseModel` draws it from a generator seeded by
``seed`` and a hash of the state and task, so a run is reproducible and the same
observation gives the same chunk offline and in live replay.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smolvla_policy import bags
from smolvla_policy.bags import BagError, BagReader, JointSeries
from smolvla_policy.metrics import ChunkRecord, compute_metrics
from smolvla_policy.runtime import Chunk, InferenceResult, Observation, PolicyRuntime, RuntimeConfig

DEFAULT_STRIDE = 10
DEG = 180 / math.pi


# ------------------------------------------------------------------------------------------ observations


def _seconds(stamp: Any) -> float:
    return int(stamp.sec) + int(stamp.nanosec) * 1e-9


def decode_image(msg: Any) -> np.ndarray:
    """RGB array of a ``sensor_msgs/Image`` or ``CompressedImage`` (rclpy or rosbags message)."""
    from so100_driver.image_conversion import compressed_msg_to_rgb, image_msg_to_rgb

    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return compressed_msg_to_rgb(msg)
    return image_msg_to_rgb(msg)


def assemble_observation(
    joint_state: Any,
    images: Mapping[str, Any],
    instruction: str | None,
    camera_topics: Mapping[str, str],
    request_task: str = "",
) -> tuple[Observation | None, str]:
    """The policy node's observation from its newest inputs, or (None, reason); rclpy or rosbags messages.

    Same rules as the policy node: the stamp is the joint state's; a request's task overrides the instruction.
    """
    from so100_driver.image_conversion import ImageConversionError

    if joint_state is None:
        return None, "no joint state received on /joint_states"
    if len(joint_state.position) != len(joint_state.name):
        return (
            None,
            f"/joint_states has {len(joint_state.name)} names but {len(joint_state.position)} positions",
        )
    rgb: dict[str, np.ndarray] = {}
    stamps: dict[str, float] = {}
    for camera, topic in camera_topics.items():
        msg = images.get(camera)
        if msg is None:
            return None, f"no image received from camera {camera!r} on {topic}"
        try:
            rgb[camera] = decode_image(msg)
        except (ImageConversionError, ValueError) as exc:
            return None, f"camera {camera!r} on {topic}: {exc}"
        stamps[camera] = _seconds(msg.header.stamp)
    task = request_task if request_task.strip() else instruction
    observation = Observation(
        images=rgb,
        joint_positions=dict(zip(joint_state.name, (float(p) for p in joint_state.position), strict=True)),
        stamp=_seconds(joint_state.header.stamp),
        task=task,
        image_stamps=stamps,
    )
    return observation, ""


# ------------------------------------------------------------------------------------------ policies


def input_seed(seed: int, state: np.ndarray, task: str) -> list[int]:
    """Seed words for the noise of one observation: ``seed`` and a CRC32 of the state and the task.

    The state is rounded to 1e-6 (checkpoint units): last-bit differences of equivalent conversions vanish.
    """
    rounded = np.round(np.asarray(state, dtype=np.float64), 6) + 0.0  # + 0.0 turns -0.0 into 0.0
    return [int(seed), zlib.crc32(task.encode(), zlib.crc32(rounded.tobytes()))]


class SeededNoiseModel:
    """Wraps a ``predict_chunk`` model so its initial noise is a function of ``seed`` and the inputs.

    noise = ``np.random.default_rng(input_seed(...)).standard_normal((chunk_size, max_action_dim))``.
    """

    def __init__(self, model: Any, seed: int = 0):
        self.model = model
        self.seed = int(seed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def noise_for(self, state: np.ndarray, task: str) -> np.ndarray:
        rng = np.random.default_rng(input_seed(self.seed, state, task))
        return rng.standard_normal((self.model.chunk_size, self.model.max_action_dim)).astype(np.float32)

    def predict_chunk(self, images, state, task, **kwargs) -> np.ndarray:
        kwargs.setdefault("noise", self.noise_for(np.asarray(state, dtype=np.float64), task))
        return self.model.predict_chunk(images, state, task, **kwargs)


class GroundTruthPolicy:
    """A "policy" that answers every observation with the recorded commands (a sanity check: zero error).

    Same ``infer`` interface as :class:`~smolvla_policy.runtime.PolicyRuntime`; beyond the recording it holds
    the first/last recorded command.
    """

    def __init__(self, truth: JointSeries, dt: float, chunk_size: int, default_task: str = "replay"):
        self.truth = truth
        self.joint_names = list(truth.joint_names)
        self.dt = float(dt)
        self.chunk_size = int(chunk_size)
        self.default_task = default_task

    def infer(self, obs: Observation, now: float, **_: Any) -> InferenceResult:
        started = time.perf_counter()
        times = obs.stamp + np.arange(self.chunk_size) * self.dt
        positions = np.stack(
            [
                np.interp(times, self.truth.times, self.truth.positions[:, j])
                for j in range(len(self.joint_names))
            ],
            axis=1,
        )
        chunk = Chunk(
            joint_names=self.joint_names,
            positions=positions,
            dt=self.dt,
            stamp=obs.stamp,
            task=(obs.task or self.default_task),
            inference_start=now,
            latency=time.perf_counter() - started,
            observation_age=now - obs.stamp,
            checkpoint_actions=positions,
        )
        return InferenceResult(chunk=chunk)


def load_runtime_policy(
    checkpoint: str,
    cameras: Mapping[str, str] | Sequence[str],
    *,
    units: str = "degrees",
    calibration_file: str | None = None,
    task: str = "",
    device: str = "cpu",
    dtype: str = "float32",
    vlm_path: str | None = None,
    seed: int = 0,
    units_check: str = "strict",
    image_resize: str = "refuse",
    max_observation_age_s: float = 0.5,
    fps: float | None = None,
    joint_names: Sequence[str] = bags.SO101_JOINTS,
) -> PolicyRuntime:
    """The policy node's runtime for ``checkpoint`` (validated like the node), with seeded noise."""
    from smolvla_policy.runtime import CheckpointInfo

    calibration = None
    if calibration_file:
        from so100_driver.calibration import load_calibration

        calibration = load_calibration(calibration_file)
    config = RuntimeConfig(
        cameras=cameras,
        joint_names=list(joint_names),
        units=units,
        calibration=calibration,
        default_task=task,
        max_observation_age_s=max_observation_age_s,
        image_resize=image_resize,
        units_check=units_check,
        fps=fps,
    )
    runtime = PolicyRuntime(CheckpointInfo.from_checkpoint(checkpoint), config)
    runtime.load_model(checkpoint, vlm_path=vlm_path, device=device, dtype=dtype)
    runtime.model = SeededNoiseModel(runtime.model, seed)
    return runtime


# ------------------------------------------------------------------------------------------ evaluation


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
    gripper_joint: str = "gripper"
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


def make_records(chunks: Sequence[Chunk], truth: JointSeries) -> list[ChunkRecord]:
    """Pair each chunk with the ground truth at its action times (NaN outside the recording)."""
    records = []
    for chunk in chunks:
        order = [chunk.joint_names.index(n) for n in truth.joint_names]
        predicted = np.asarray(chunk.positions, dtype=np.float64)[:, order]
        times = chunk.stamp + np.arange(len(predicted)) * chunk.dt
        records.append(
            ChunkRecord(chunk.stamp, chunk.dt, predicted, truth.at(times), chunk.latency, chunk.task)
        )
    return records


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="obs", desc="evaluating", file=sys.stderr, dynamic_ncols=True)


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
    with BagReader(bag_path) as bag:
        wanted = {settings.joint_state_topic: [bags.JOINT_STATE]}
        wanted.update({topic: list(bags.IMAGE_TYPES) for topic in settings.camera_topics.values()})
        bag.require(wanted, "the policy's observations")
        has_instruction = settings.instruction_topic in bag.topics
        if has_instruction:
            bag.require({settings.instruction_topic: [bags.STRING]}, "the instruction")
        elif not settings.task.strip():
            raise BagError(
                f"bag {bag.path}: no instruction topic {settings.instruction_topic} and no task given; "
                "pass --task 'what the robot was asked to do'"
            )
        truth = read_ground_truth(bag, settings.ground_truth_topic, policy.joint_names)
        joint_count = bag.message_count(settings.joint_state_topic)
        # matched to the microsecond: float seconds of Unix-time stamps are not exact to the nanosecond
        wanted_stamps = None if sample_times is None else {round(t * 1e6) for t in sample_times}
        total = (
            len(wanted_stamps)
            if wanted_stamps is not None
            else math.ceil(joint_count / max(1, settings.stride))
        )
        if settings.max_samples:
            total = min(total, settings.max_samples)
        bar = _progress(total, progress)
        camera_of_topic = {topic: camera for camera, topic in settings.camera_topics.items()}
        latest: dict[str, tuple[Any, bytes]] = {}  # topic -> (connection, raw): decoded only when sampled
        decoded: dict[str, tuple[bytes, Any]] = {}
        chunks: list[Chunk] = []
        refusals: dict[str, int] = {}
        samples = 0
        joint_index = 0
        pending: int | None = None  # log time of a due sample, taken once every message up to it is in

        def decode(topic: str) -> Any:
            conn, raw = latest[topic]
            cached = decoded.get(topic)
            if cached is None or cached[0] is not raw:
                decoded[topic] = (raw, bag.decode(conn, raw))
            return decoded[topic][1]

        def take_sample() -> None:
            nonlocal samples
            joint_state = decode(settings.joint_state_topic)
            images = {camera_of_topic[t]: decode(t) for t in settings.camera_topics.values() if t in latest}
            instruction = (
                decode(settings.instruction_topic).data if settings.instruction_topic in latest else None
            )
            obs, reason = assemble_observation(joint_state, images, instruction, settings.camera_topics)
            samples += 1
            if obs is not None:
                result = policy.infer(obs, now=obs.stamp)
                if result.ok:
                    chunks.append(result.chunk)
                else:
                    reason = result.refusal
            if obs is None or not result.ok:
                key = _reason_key(reason)
                refusals[key] = refusals.get(key, 0) + 1
            if bar is not None:
                bar.update(1)

        topics = [settings.joint_state_topic, *settings.camera_topics.values()]
        if has_instruction:
            topics.append(settings.instruction_topic)
        for conn, log_time, raw in bag.raw_messages(topics):
            if pending is not None and log_time > pending:
                take_sample()
                pending = None
                if settings.max_samples and samples >= settings.max_samples:
                    break
            latest[conn.topic] = (conn, raw)
            if conn.topic == settings.joint_state_topic:
                if wanted_stamps is not None:
                    due = round(bags.header_time_ns(decode(conn.topic)) / 1000) in wanted_stamps
                else:
                    due = joint_index % max(1, settings.stride) == 0
                joint_index += 1
                if due:
                    pending = log_time
        if pending is not None and not (settings.max_samples and samples >= settings.max_samples):
            take_sample()
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


def _reason_key(reason: str) -> str:
    """Group refusal reasons that differ only in numbers (ages, sizes)."""
    import re

    return re.sub(r"-?\d+(\.\d+)?", "N", reason or "unknown")[:200]


# ------------------------------------------------------------------------------------------ report


def report_dict(result: EvaluationResult) -> dict:
    return {
        "summary": result.summary(),
        "metrics": result.metrics,
        "chunks": [
            {
                "stamp": r.stamp,
                "dt": r.dt,
                "latency": r.latency if math.isfinite(r.latency) else None,
                "task": r.task,
                "mae": _nan_to_none(float(np.nanmean(r.abs_error()))) if np.isfinite(r.truth).any() else None,
                "predicted": np.round(r.predicted, 6).tolist(),
            }
            for r in result.records
        ],
    }


def _nan_to_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _plots(result: EvaluationResult, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = result.joint_names
    files = []
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 1.8 * len(names)), sharex=True, squeeze=False)
    t0 = result.truth.times[0] if len(result.truth.times) else 0.0
    for j, name in enumerate(names):
        ax = axes[j, 0]
        ax.plot(
            result.truth.times - t0, result.truth.positions[:, j], color="black", lw=1.2, label="recorded"
        )
        for k, r in enumerate(result.records):
            ax.plot(
                r.times - t0,
                r.predicted[:, j],
                color="tab:orange",
                lw=0.8,
                alpha=0.7,
                label="predicted chunks" if k == 0 else None,
            )
        ax.set_ylabel(f"{name}\n[rad]", fontsize=8)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("time since first command [s]")
    fig.tight_layout()
    fig.savefig(out / "predicted_vs_recorded.png", dpi=90)
    plt.close(fig)
    files.append("predicted_vs_recorded.png")

    mae = np.array(result.metrics.get("mae_by_step", []), dtype=float)
    fig, ax = plt.subplots(figsize=(8, 4))
    if mae.size:
        steps = np.arange(mae.shape[0])
        for j, name in enumerate(names):
            ax.plot(steps, mae[:, j], label=name)
    ax.set_xlabel("horizon step (action index in the chunk)")
    ax.set_ylabel("MAE [rad]")
    ax.set_title("error by horizon step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "error_by_horizon.png", dpi=90)
    plt.close(fig)
    files.append("error_by_horizon.png")

    latencies = [r.latency * 1e3 for r in result.records if math.isfinite(r.latency)]
    fig, ax = plt.subplots(figsize=(8, 4))
    if latencies:
        ax.hist(latencies, bins=min(30, max(5, len(latencies) // 2)), color="tab:blue")
    ax.set_xlabel("inference latency [ms]")
    ax.set_ylabel("chunks")
    ax.set_title("inference latency")
    fig.tight_layout()
    fig.savefig(out / "latency_histogram.png", dpi=90)
    plt.close(fig)
    files.append("latency_histogram.png")
    return files


def _fmt(value: Any, scale: float = 1.0, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value * scale:.{digits}g}"


def markdown_report(result: EvaluationResult, plots: Sequence[str]) -> str:
    m, s = result.metrics, result.summary()
    lines = [
        f"# SmolVLA evaluation: {Path(result.bag).name}",
        "",
        f"- policy: `{result.policy_id}`; mode: {result.mode}",
        f"- observations sampled: {s['samples']}, chunks: {s['chunks']}, refused: {s['refused']}",
        f"- bag duration {s['bag_duration_s']:.2f} s, evaluated in {s['wall_time_s']:.2f} s "
        f"(real-time factor {_fmt(s['real_time_factor'], digits=3)})",
        f"- compared actions: {m.get('compared_actions', 0)} "
        f"(without ground truth: {m.get('actions_without_ground_truth', 0)})",
        "",
        "## Error per joint (rad; degrees in brackets)",
        "",
        "| joint | MAE | RMSE |",
        "|---|---|---|",
    ]
    for name in ["all", *result.joint_names]:
        mae, rmse = m.get("mae", {}).get(name), m.get("rmse", {}).get(name)
        lines.append(
            f"| {name} | {_fmt(mae)} ({_fmt(mae, DEG, 3)}°) | {_fmt(rmse)} ({_fmt(rmse, DEG, 3)}°) |"
        )
    g = m.get("gripper", {})
    jumps, lat = m.get("boundary_jumps", {}), m.get("latency", {})
    smooth = m.get("smoothness", {})

    def second(which: str):
        return smooth.get(which, {}).get("mean_abs_second_difference")

    lines += [
        "",
        "## Gripper, smoothness, boundaries, latency",
        "",
        f"- gripper open/closed agreement: {_fmt(g.get('agreement'))} over {g.get('steps', 0)} steps "
        f"(threshold {_fmt(g.get('threshold'))} rad)",
        f"- mean |second difference| per step: predicted {_fmt(second('predicted'))} rad, "
        f"recorded {_fmt(second('recorded'))} rad",
        f"- boundary jumps between consecutive chunks: mean {_fmt(jumps.get('mean'))} rad, "
        f"p95 {_fmt(jumps.get('p95'))}, max {_fmt(jumps.get('max'))} ({jumps.get('count', 0)} boundaries)",
        f"- inference latency: mean {_fmt(lat.get('mean'), 1e3)} ms, p50 {_fmt(lat.get('p50'), 1e3)} ms, "
        f"p95 {_fmt(lat.get('p95'), 1e3)} ms, max {_fmt(lat.get('max'), 1e3)} ms",
    ]
    if result.refusals:
        lines += ["", "## Refused observations", ""]
        lines += [
            f"- {count} x {reason}" for reason, count in sorted(result.refusals.items(), key=lambda x: -x[1])
        ]
    lines += ["", "## Plots", ""]
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def html_report(markdown: str) -> str:
    """A minimal standalone HTML rendering of the markdown report (headings, lists, tables, images)."""
    import html

    body: list[str] = []
    block = ""  # the open block element: "", "table" or "ul"

    def open_block(kind: str) -> None:
        nonlocal block
        if block != kind:
            if block:
                body.append(f"</{block}>")
            if kind:
                body.append(f"<{kind}>")
            block = kind

    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            cell = "th" if block != "table" else "td"
            open_block("table")
            body.append("<tr>" + "".join(f"<{cell}>{html.escape(c)}</{cell}>" for c in cells) + "</tr>")
        elif line.startswith("- "):
            open_block("ul")
            body.append(f"<li>{html.escape(line[2:]).replace('`', '')}</li>")
        else:
            open_block("")
            if line.startswith("# "):
                body.append(f"<h1>{html.escape(line[2:])}</h1>")
            elif line.startswith("## "):
                body.append(f"<h2>{html.escape(line[3:])}</h2>")
            elif line.startswith("!["):
                src = line[line.index("(") + 1 : -1]
                body.append(f'<p><img src="{html.escape(src)}" style="max-width:100%"></p>')
            elif line.strip():
                body.append(f"<p>{html.escape(line)}</p>")
    open_block("")
    style = (
        "body{font-family:sans-serif;max-width:960px;margin:auto}td,th{border:1px solid #ccc;padding:2px 8px}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(result: EvaluationResult, out_dir: str | Path, plots: bool = True) -> Path:
    """Write report.json, report.md, report.html and the PNG plots into ``out_dir``; returns report.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = _plots(result, out) if plots else []
    (out / "report.json").write_text(json.dumps(report_dict(result), indent=1))
    markdown = markdown_report(result, files)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(html_report(markdown))
    return out / "report.json"


# ------------------------------------------------------------------------------------------ command line


def parse_cameras(specs: Sequence[str]) -> dict[str, str]:
    """``["top=/cameras/top/image_raw", "wrist"]`` -> camera -> topic (default /cameras/<name>/image_raw)."""
    cameras: dict[str, str] = {}
    for spec in specs:
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                continue
            name, _, topic = item.partition("=")
            name = name.strip()
            if not name or name in cameras:
                raise ValueError(f"--cameras: empty or repeated camera name in {item!r}")
            cameras[name] = topic.strip() or f"/cameras/{name}/image_raw"
    return cameras


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smolvla-eval",
        description="Evaluate a SmolVLA checkpoint offline on a rosbag2 recording (mcap or sqlite3).",
    )
    parser.add_argument("bag", help="rosbag2 folder (ros2 bag record or smolvla-record)")
    parser.add_argument("--checkpoint", help="LeRobot SmolVLA checkpoint folder or cached hub repo id")
    parser.add_argument(
        "--ground-truth",
        action="store_true",
        help="replay the recorded commands as the policy (sanity check: zero error)",
    )
    parser.add_argument(
        "--ground-truth-topic",
        default="/joint_commands",
        help="what was really commanded: JointTrajectory or JointState topic (e.g. /leader/joint_states)",
    )
    parser.add_argument("--joint-states-topic", default="/joint_states")
    parser.add_argument("--instruction-topic", default="/instruction")
    parser.add_argument(
        "--cameras",
        action="append",
        default=[],
        help="name=topic[,name=topic] (name = checkpoint image key suffix); default: the checkpoint's "
        "cameras on /cameras/<name>/image_raw",
    )
    parser.add_argument(
        "--units", default="degrees", help="checkpoint joint units: degrees | range | radians"
    )
    parser.add_argument("--calibration", default="", help="LeRobot calibration JSON (needed for range units)")
    parser.add_argument("--units-check", default="strict", choices=("strict", "warn", "off"))
    parser.add_argument("--task", default="", help="instruction used while the bag has none")
    parser.add_argument(
        "--stride", type=int, default=DEFAULT_STRIDE, help="one observation every N joint states"
    )
    parser.add_argument("--max-samples", type=int, default=0, help="stop after N observations (0: all)")
    parser.add_argument("--max-age", type=float, default=0.5, help="max_observation_age_s of the policy node")
    parser.add_argument("--image-resize", default="refuse", choices=("refuse", "resize"))
    parser.add_argument("--fps", type=float, default=0.0, help="action rate; 0: the checkpoint's")
    parser.add_argument("--chunk-size", type=int, default=50, help="--ground-truth only: actions per chunk")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--vlm-path", default="")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (runs are reproducible)")
    parser.add_argument(
        "--gripper-threshold", type=float, default=None, help="rad; default: middle of the recorded range"
    )
    parser.add_argument("--out", default="reports/eval", help="report folder")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = log or (lambda text: print(text, file=sys.stderr))
    try:
        cameras = parse_cameras(args.cameras)
        if args.ground_truth:
            with BagReader(args.bag) as bag:
                truth = read_ground_truth(bag, args.ground_truth_topic, bags.SO101_JOINTS)
            policy: Any = GroundTruthPolicy(truth, 1.0 / (args.fps or 30.0), args.chunk_size)
            policy_id = f"ground truth ({args.ground_truth_topic})"
        else:
            if not args.checkpoint:
                raise ValueError("give --checkpoint (or --ground-truth for a sanity check of the bag)")
            if not cameras:
                from smolvla_policy.runtime import CheckpointInfo

                keys = CheckpointInfo.from_checkpoint(args.checkpoint).image_keys
                cameras = parse_cameras([k.removeprefix("observation.images.") for k in keys])
            policy = load_runtime_policy(
                args.checkpoint,
                list(cameras),
                units=args.units,
                calibration_file=args.calibration or None,
                task=args.task,
                device=args.device,
                dtype=args.dtype,
                vlm_path=args.vlm_path or None,
                seed=args.seed,
                units_check=args.units_check,
                image_resize=args.image_resize,
                max_observation_age_s=args.max_age,
                fps=args.fps or None,
            )
            for warning in policy.warnings:
                log(f"warning: {warning}")
            policy_id = args.checkpoint
        settings = EvalSettings(
            camera_topics=cameras,
            joint_state_topic=args.joint_states_topic,
            ground_truth_topic=args.ground_truth_topic,
            instruction_topic=args.instruction_topic,
            task=args.task,
            stride=args.stride,
            max_samples=args.max_samples,
            gripper_threshold=args.gripper_threshold,
        )
        result = evaluate_bag(args.bag, policy, settings, policy_id, progress=not args.no_progress)
    except (BagError, ValueError, FileNotFoundError) as exc:
        log(f"smolvla-eval: error: {exc}")
        return 2
    path = write_report(result, args.out, plots=not args.no_plots)
    mae = result.metrics.get("mae", {}).get("all")
    log(
        f"{len(result.records)} chunks from {result.samples} observations "
        f"({sum(result.refusals.values())} refused); MAE {_fmt(mae)} rad; report: {path.parent}/report.html"
    )
    return 0 if result.records else 1


if __name__ == "__main__":
    sys.exit(main())
