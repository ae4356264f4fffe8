"""`make demo`: the whole SmolVLA pipeline in simulation, with live progress, a summary and a report folder.

It starts the ``sim`` graph (MuJoCo SO-101 with top and wrist cameras, policy, executor) through the same
:class:`~smolvla_bringup.runner.Runner` and YAML files as ``smolvla-run sim``, waits for the model, gives the
instruction (latched on ``/instruction``, as ``smolvla-instruct`` does), runs for ``--duration`` seconds and
writes ``reports/demo-<timestamp>/``: ``summary.json``, ``trajectories.png`` (executed vs predicted joint
trajectories), camera frames and the exact parameter file used.

The model: ``--checkpoint`` when given; else ``lerobot/smolvla_base`` when the hub (or the local hub cache)
has it; else a random-weight model of the same architecture, generated once into the cache folder and
announced as UNTRAINED (its motion is meaningless; it shows the pipeline, not a skill). ``--tiny`` uses a
tiny random model instead (seconds instead of minutes; what the tests run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

HUB_CHECKPOINT = "lerobot/smolvla_base"
SIM_CAMERAS = ("top", "wrist", "front", "side")  # sim camera given to the checkpoint's 1st, 2nd, ... image
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
GENERATED_VERSION = "v1"  # bump when the generated demo checkpoints change
# LeRobot degree-mode statistics (body joints in degrees, gripper 0..100) for the generated models.
DEMO_STATS = {
    key: {
        "mean": [0.0, -20.0, 30.0, 10.0, 0.0, 30.0],
        "std": [25.0, 20.0, 20.0, 15.0, 30.0, 15.0],
        "min": [-90.0, -100.0, -60.0, -80.0, -150.0, 0.0],
        "max": [90.0, 60.0, 110.0, 90.0, 150.0, 80.0],
    }
    for key in ("observation.state", "action")
}
UNTRAINED_BANNER = """
  ##########################################################################################
  #  UNTRAINED MODEL: {what}
  #  The architecture is SmolVLA's, the weights are RANDOM: the arm moves, but not with
  #  purpose. This demo shows the pipeline (cameras -> policy -> chunks -> executor -> arm).
  #  For a real policy: make demo ARGS="--checkpoint lerobot/smolvla_base" (needs the hub)
  #  or ARGS="--checkpoint /path/to/your/finetune/pretrained_model".
  ##########################################################################################
"""


# ------------------------------------------------------------------------------------------- the model


def cache_dir() -> Path:
    """Where generated models live: ``$XDG_CACHE_HOME/smolvla_ros``, else ``.cache/smolvla_ros`` here."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.cwd() / ".cache") / "smolvla_ros"


def make_demo_checkpoint(out_dir: Path, tiny: bool) -> Path:
    """A random-weight SmolVLA for the sim (cameras top + wrist, 256x256, 30 fps), generated once.

    Written to a temporary folder first and renamed, so an interrupted generation is never reused.
    """
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and (out_dir / "model.safetensors").is_file():
        return out_dir
    from smolvla_policy.model.random_checkpoints import make_real_size_checkpoint, make_tiny_checkpoint

    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    stats = {k: {s: np.asarray(v, float) for s, v in d.items()} for k, d in DEMO_STATS.items()}
    common = {"cameras": ("top", "wrist"), "image_shape": (3, 256, 256), "stats": stats, "fps": 30.0}
    if tiny:
        make_tiny_checkpoint(partial, **common)
    else:
        make_real_size_checkpoint(partial, dtype="bfloat16", **common)
    partial.rename(out_dir)
    return out_dir


def hub_checkpoint(repo: str = HUB_CHECKPOINT, timeout_s: float = 5.0) -> tuple[str | None, str]:
    """(repo, "") when the hub or its local cache has the checkpoint and its backbone files; else (None, why).

    With ``HF_HUB_OFFLINE=1`` only the local cache is consulted; otherwise the hub gets one quick request
    first, so an unreachable hub costs seconds, not a long download timeout.
    """
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not offline:
        try:
            from huggingface_hub import HfApi

            HfApi().model_info(repo, timeout=timeout_s)
        except Exception as err:  # no network, DNS failure, timeout, hub error
            return None, f"the hub did not answer ({type(err).__name__})"
    try:
        from smolvla_policy.model.checkpoint import read_json, resolve_checkpoint_dir, resolve_vlm_dir

        folder = resolve_checkpoint_dir(repo)
        resolve_vlm_dir(read_json(folder / "config.json")["vlm_model_name"], folder)
        return repo, ""
    except Exception as err:  # not cached, incomplete cache, failed download: use the random model
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return None, ("offline (HF_HUB_OFFLINE=1) and not cached: " if offline else "") + reason[:200]


@dataclass
class ModelChoice:
    checkpoint: str
    description: str
    untrained: bool
    real_size: bool


def choose_model(args) -> ModelChoice:
    if args.checkpoint:
        return ModelChoice(args.checkpoint, f"your checkpoint {args.checkpoint}", False, True)
    if args.tiny:
        path = make_demo_checkpoint(cache_dir() / f"demo-tiny-{GENERATED_VERSION}", tiny=True)
        return ModelChoice(str(path), "tiny random SmolVLA (--tiny)", True, False)
    if not args.random:
        print(f"demo: looking for {HUB_CHECKPOINT} (hub or local cache) ...", flush=True)
        repo, why = hub_checkpoint()
        if repo:
            return ModelChoice(repo, f"{repo} (pretrained)", False, True)
        print(f"demo: {HUB_CHECKPOINT} is not available: {why}", flush=True)
    folder = cache_dir() / f"demo-random-real-size-{GENERATED_VERSION}"
    if not folder.is_dir():
        print(
            f"demo: generating a random-weight SmolVLA (450 M parameters, once) into {folder} ...", flush=True
        )
    started = time.monotonic()
    path = make_demo_checkpoint(folder, tiny=False)
    if time.monotonic() - started > 1.0:
        print(f"demo: generated in {time.monotonic() - started:.0f} s", flush=True)
    return ModelChoice(str(path), "random-weight SmolVLA, real size (450 M parameters)", True, True)


def camera_entries(image_keys: list[str]) -> list[str]:
    """The policy's ``cameras`` entries for the checkpoint's image features, from the sim's cameras.

    Features named like sim cameras use them (``top``, ``wrist``); otherwise the sim cameras are given in
    order to the checkpoint's images (smolvla_base: camera1 <- top, camera2 <- wrist, camera3 <- front).
    """
    names = [k.removeprefix("observation.images.") for k in image_keys]
    if all(n in SIM_CAMERAS for n in names):
        return names
    if len(names) > len(SIM_CAMERAS):
        raise ValueError(f"the checkpoint wants {len(names)} cameras; the simulation has {len(SIM_CAMERAS)}")
    return [f"{sim}:{key}" for sim, key in zip(SIM_CAMERAS, image_keys, strict=False)]


def demo_parameters(model: ModelChoice, args) -> dict:
    """The demo's own parameter file (applied after the sim graph's): model, camera map, sizes, device."""
    from smolvla_policy.runtime import CheckpointInfo

    info = CheckpointInfo.from_checkpoint(model.checkpoint)
    cameras = camera_entries(list(info.image_shapes))
    _, height, width = next(iter(info.image_shapes.values()))
    device = args.device or default_device()
    dtype = args.dtype or ("bfloat16" if model.real_size else "float32")
    policy = {
        "checkpoint": model.checkpoint,
        "cameras": cameras,
        "device": device,
        "dtype": dtype,
        "image_resize": "resize",  # should the checkpoint's cameras differ in size
        "max_observation_age_s": 2.0,
    }
    executor = {}
    if model.real_size and device == "cpu":
        policy["warmup"] = False  # a warm-up pass costs as much as a chunk here
        # Seconds per chunk, more than a chunk's horizon (1.7 s at 30 Hz): a chunk requested early (async)
        # would lie entirely in the past when it arrives and be dropped as stale; sync mode asks when the
        # plan is done, and the executor then plays the whole chunk from where the arm stopped.
        executor["mode"] = "sync"
    arm = {
        "cameras": [c.split(":")[0] for c in cameras],
        "camera_width": int(width),
        "camera_height": int(height),
    }
    params = {"arm": {"ros__parameters": arm}, "policy": {"ros__parameters": policy}}
    if executor:
        params["executor"] = {"ros__parameters": executor}
    return params


def default_device() -> str:
    """cuda when this machine's torch sees a GPU, else cpu (the demo process runs the policy anyway)."""
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


# ------------------------------------------------------------------------------------------- recording


@dataclass
class Recording:
    joint_states: list[tuple[float, list[float]]] = field(default_factory=list)  # (stamp s, rad)
    commands: list[tuple[float, list[float]]] = field(default_factory=list)
    chunks: list[dict] = field(default_factory=list)
    executor: object = None  # latest smolvla_msgs/ExecutorStatus
    policy: object = None  # latest smolvla_msgs/PolicyStatus
    frames: dict[str, object] = field(default_factory=dict)  # camera -> latest Image message
    idle_at_first_chunk: int | None = None


def make_recorder(context, cameras: list[str], instruction: str):
    """A passive node of the demo: records what the graph does and holds the latched instruction."""
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from smolvla_bringup.instruct import latched_qos
    from smolvla_msgs.msg import ActionChunk, ExecutorStatus, PolicyStatus

    def seconds(stamp) -> float:
        return stamp.sec + stamp.nanosec * 1e-9

    class Recorder(Node):
        def __init__(self):
            super().__init__("demo_recorder", context=context)
            self.lock = threading.Lock()
            self.data = Recording()
            self.instruction = instruction
            self.instruction_pub = self.create_publisher(String, "/instruction", latched_qos())
            self.create_subscription(JointState, "/joint_states", self._on_state, 50)
            self.create_subscription(JointTrajectory, "/joint_commands", self._on_command, 50)
            self.create_subscription(ActionChunk, "/smolvla/action_chunk", self._on_chunk, 10)
            self.create_subscription(ExecutorStatus, "/smolvla/executor_status", self._on_executor, 10)
            self.create_subscription(PolicyStatus, "/smolvla/policy_status", self._on_policy, 10)
            for name in cameras:
                self.create_subscription(
                    Image,
                    f"/cameras/{name}/image_raw",
                    lambda m, n=name: self._on_image(n, m),
                    qos_profile_sensor_data,
                )

        def instruct(self) -> None:
            self.instruction_pub.publish(String(data=self.instruction))

        def now(self) -> float:
            return self.get_clock().now().nanoseconds * 1e-9

        def _ordered(self, names, values) -> list[float] | None:
            index = {n: i for i, n in enumerate(names)}
            if any(j not in index for j in JOINTS) or len(values) != len(names):
                return None
            return [float(values[index[j]]) for j in JOINTS]

        def _on_state(self, msg) -> None:
            row = self._ordered(list(msg.name), list(msg.position))
            if row is not None:
                with self.lock:
                    self.data.joint_states.append((seconds(msg.header.stamp), row))

        def _on_command(self, msg) -> None:
            if msg.points:
                row = self._ordered(list(msg.joint_names), list(msg.points[0].positions))
                if row is not None:
                    with self.lock:
                        self.data.commands.append((seconds(msg.header.stamp), row))

        def _on_chunk(self, msg) -> None:
            names = list(msg.trajectory.joint_names)
            rows = [self._ordered(names, list(p.positions)) for p in msg.trajectory.points]
            with self.lock:
                status = self.data.executor
                if self.data.idle_at_first_chunk is None and status is not None:
                    self.data.idle_at_first_chunk = int(status.idle_ticks)
                stamp = seconds(msg.header.stamp)
                # With no plan left the executor starts a chunk on arrival (stall compensation); otherwise
                # action i is for stamp + i * dt.
                dry = status is None or int(status.actions_left) == 0
                self.data.chunks.append(
                    {
                        "chunk_id": int(msg.chunk_id),
                        "stamp": stamp,
                        "received": self.now(),
                        "start": max(stamp, self.now()) if dry else stamp,
                        "dt": seconds(msg.dt),
                        "latency": seconds(msg.inference_latency),
                        "positions": [r for r in rows if r is not None],
                    }
                )

        def _on_executor(self, msg) -> None:
            with self.lock:
                self.data.executor = msg

        def _on_policy(self, msg) -> None:
            with self.lock:
                self.data.policy = msg

        def _on_image(self, name: str, msg) -> None:
            with self.lock:
                self.data.frames[name] = msg

        def snapshot_frames(self) -> dict:
            from so100_driver.image_conversion import msg_to_rgb

            with self.lock:
                frames = dict(self.data.frames)
            return {name: msg_to_rgb(msg) for name, msg in frames.items()}

    return Recorder()


# ------------------------------------------------------------------------------------------- summary


def motion_ranges(states: list[tuple[float, list[float]]]) -> dict[str, float]:
    """Per joint: max - min of the measured position over the run (rad)."""
    if not states:
        return {j: 0.0 for j in JOINTS}
    positions = np.array([row for _, row in states])
    return {j: float(np.ptp(positions[:, i])) for i, j in enumerate(JOINTS)}


def summarize(data: Recording, t0: float, t_end: float, model: ModelChoice, load_s: float) -> dict:
    latencies = [c["latency"] for c in data.chunks]
    status = data.executor
    run_states = [(t, p) for t, p in data.joint_states if t0 <= t <= t_end]
    idle = int(status.idle_ticks) if status is not None else 0
    return {
        "model": model.description,
        "checkpoint": model.checkpoint,
        "untrained": model.untrained,
        "instruction": None,  # filled by the caller
        "duration_s": round(t_end - t0, 2),  # from the instruction
        "first_chunk_after_s": round(data.chunks[0]["received"] - t0, 2) if data.chunks else None,
        "model_load_s": round(load_s, 1),
        "chunks_published": len(data.chunks),
        "chunks_received": int(status.chunks_received) if status else 0,
        "chunks_dropped": int(status.chunks_dropped) if status else 0,
        "executed_steps": int(status.executed_steps) if status else 0,
        "idle_ticks": idle,
        "idle_ticks_after_first_chunk": idle - data.idle_at_first_chunk
        if data.idle_at_first_chunk is not None
        else None,
        "inference_latency_s": {
            "min": round(min(latencies), 3),
            "median": round(statistics.median(latencies), 3),
            "max": round(max(latencies), 3),
        }
        if latencies
        else None,
        "max_boundary_jump_rad": round(float(status.max_boundary_jump), 4) if status else None,
        "joint_motion_range_rad": {j: round(v, 4) for j, v in motion_ranges(run_states).items()},
        "executor_message": status.message if status else "",
        "policy_message": data.policy.message if data.policy is not None else "",
    }


def print_summary(summary: dict, report: Path) -> None:
    lat = summary["inference_latency_s"]
    print("\n==================== SmolVLA simulation demo: summary ====================")
    print(f"model              {summary['model']}{'   <- UNTRAINED' if summary['untrained'] else ''}")
    print(f"instruction        {summary['instruction']!r}")
    print(
        f"pipeline time      {summary['duration_s']:.1f} s after the instruction (model loaded in "
        f"{summary['model_load_s']:.0f} s, first chunk after {summary['first_chunk_after_s'] or '-'} s)"
    )
    print(
        f"chunks             {summary['chunks_published']} published, {summary['chunks_received']} "
        f"received by the executor, {summary['chunks_dropped']} dropped"
    )
    if lat:
        print(
            f"inference latency  min {lat['min']:.3f} s | median {lat['median']:.3f} s | "
            f"max {lat['max']:.3f} s"
        )
    after = summary["idle_ticks_after_first_chunk"]
    print(
        f"executor           {summary['executed_steps']} steps executed, {summary['idle_ticks']} idle ticks"
        + (f" ({after} after the first chunk)" if after is not None else "")
    )
    print(
        "joint motion range "
        + ", ".join(f"{j} {v:.3f}" for j, v in summary["joint_motion_range_rad"].items())
        + " rad"
    )
    print(f"report             {report}")
    print("==========================================================================\n")


def plot_trajectories(data: Recording, t0: float, t_end: float, path: Path) -> None:
    """Executed (/joint_states), commanded (/joint_commands) and every predicted chunk, per joint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(12, 9), sharex=True)
    start = t0 - 2.0  # a little of the still arm before the instruction
    state_rows = [(t, row) for t, row in data.joint_states if start <= t <= t_end]
    command_rows = [(t, row) for t, row in data.commands if start <= t <= t_end]
    states = np.array([row for _, row in state_rows]) if state_rows else None
    state_t = np.array([t for t, _ in state_rows]) - t0
    commands = np.array([row for _, row in command_rows]) if command_rows else None
    command_t = np.array([t for t, _ in command_rows]) - t0
    for j, (ax, name) in enumerate(zip(axes.flat, JOINTS, strict=True)):
        for k, chunk in enumerate(data.chunks):
            if not chunk["positions"]:
                continue
            rows = np.array(chunk["positions"])
            times = chunk["start"] - t0 + np.arange(len(rows)) * chunk["dt"]
            ax.plot(
                times,
                rows[:, j],
                color="tab:orange",
                alpha=0.5,
                lw=1,
                label="predicted chunks (as scheduled)" if k == 0 else None,
            )
        if commands is not None:
            ax.plot(command_t, commands[:, j], color="tab:green", lw=1, ls="--", label="commanded")
        if states is not None:
            ax.plot(state_t, states[:, j], color="tab:blue", lw=1.5, label="executed (measured)")
        ax.axvline(0.0, color="grey", lw=0.8, ls=":")
        ax.set_xlim(start - t0, t_end - t0)
        ax.set_title(name)
        ax.set_ylabel("rad")
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("time since the instruction (s)")
    axes[0, 0].legend(loc="best", fontsize=8)
    fig.suptitle("SmolVLA in simulation: executed vs predicted joint trajectories")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def save_frames(frames: dict[str, np.ndarray], folder: Path, label: str) -> list[str]:
    import cv2

    written = []
    for name, rgb in frames.items():
        path = folder / f"camera_{name}_{label}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        written.append(path.name)
    return written


# ------------------------------------------------------------------------------------------- main


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="", help="SmolVLA checkpoint folder or hub repo id to run")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model: fast, for a quick look")
    parser.add_argument("--random", action="store_true", help="skip the hub: use the random real-size model")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of pipeline after loading")
    parser.add_argument("--instruction", default="pick up the red cube", help="what to ask the robot")
    parser.add_argument("--device", default="", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default="", help="float32 | bfloat16 (default: bfloat16 for real size)")
    parser.add_argument("--load-timeout", type=float, default=300.0, help="seconds to wait for the model")
    parser.add_argument(
        "--first-chunk-timeout", type=float, default=180.0, help="seconds to wait for the first chunk"
    )
    parser.add_argument(
        "--report-dir", type=Path, default=Path("reports"), help="parent of the report folder"
    )
    return parser.parse_args(argv)


def _progress(rec, t0: float, run_start: float | None, duration: float, live: bool) -> None:
    with rec.lock:
        status, chunks = rec.data.executor, list(rec.data.chunks)
        states = list(rec.data.joint_states)
    now = rec.now()
    clock = f"[{now - run_start:5.1f}/{duration:.0f} s]" if run_start else f"[waiting {now - t0:4.0f} s]"
    latency = f"{chunks[-1]['latency']:.2f} s" if chunks else "-"
    moved = max(motion_ranges([s for s in states if s[0] >= t0]).values())
    line = (
        f"{clock} chunks {len(chunks):3d} (latency {latency}) | "
        f"executed {int(status.executed_steps) if status else 0:5d} | "
        f"idle ticks {int(status.idle_ticks) if status else 0:5d} | arm moved {moved:.2f} rad"
    )
    print(("\r" + line) if live else line, end="" if live else "\n", flush=True)


def run(args) -> int:
    from smolvla_bringup import graph
    from smolvla_bringup.runner import Runner

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # a demo stays on this machine
    os.environ.setdefault("MUJOCO_GL", "egl")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report = Path(args.report_dir) / f"demo-{stamp}"
    report.mkdir(parents=True, exist_ok=True)

    model = choose_model(args)
    if model.untrained:
        print(UNTRAINED_BANNER.format(what=model.description), flush=True)
    else:
        print(f"demo: model {model.description}", flush=True)
    import yaml

    try:
        params = demo_parameters(model, args)
    except Exception as err:  # unreadable checkpoint, not downloadable, too many cameras: say which and why
        print(f"demo: cannot use the checkpoint {model.checkpoint}: {err}", file=sys.stderr)
        return 2
    params_file = report / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    cameras = params["arm"]["ros__parameters"]["cameras"]

    files, specs = graph.graph("sim")
    runner = Runner(specs, [*files, params_file])
    print(f"demo: starting the sim graph (as `smolvla-run sim --params {params_file}`) ...", flush=True)
    started = time.monotonic()
    runner.start()
    rec = make_recorder(runner.context, cameras, args.instruction)
    runner.add_node(rec)
    summary = None
    try:
        from smolvla_msgs.msg import PolicyStatus

        print(f"demo: loading the model on {params['policy']['ros__parameters']['device']} ...", flush=True)
        deadline = time.monotonic() + args.load_timeout
        while True:
            with rec.lock:
                policy = rec.data.policy
            if policy is not None and policy.state == PolicyStatus.STATE_ERROR:
                print(f"\ndemo: the policy cannot run: {policy.message}", file=sys.stderr)
                return 1
            if policy is not None and policy.state in (
                PolicyStatus.STATE_READY,
                PolicyStatus.STATE_INFERRING,
            ):
                break
            if time.monotonic() > deadline:
                print(f"\ndemo: the model did not load within {args.load_timeout:.0f} s", file=sys.stderr)
                return 1
            time.sleep(0.2)
        load_s = time.monotonic() - started
        print(f"demo: model ready after {load_s:.0f} s; instruction: {args.instruction!r}", flush=True)
        t0 = rec.now()
        rec.instruct()
        frames_start = None
        live = sys.stdout.isatty()
        next_print = time.monotonic()
        # The run time counts from the first chunk (slow CPUs need a while for it), bounded by
        # --first-chunk-timeout.
        end = time.monotonic() + args.first_chunk_timeout + args.duration
        first_chunk_seen = False
        run_start = None
        try:
            while time.monotonic() < end:
                if not first_chunk_seen:
                    with rec.lock:
                        first_chunk_seen = bool(rec.data.chunks)
                    if first_chunk_seen:
                        end = time.monotonic() + args.duration
                        run_start = rec.now()
                        print(f"demo: first chunk after {rec.now() - t0:.1f} s", flush=True)
                    elif time.monotonic() > end - args.duration:
                        print(
                            f"\ndemo: no chunk within {args.first_chunk_timeout:.0f} s of the instruction "
                            "(inference too slow on this machine? try ARGS=--tiny or a GPU)",
                            flush=True,
                        )
                        break
                if frames_start is None or len(frames_start) < len(cameras):  # first frames of every camera
                    frames_start = rec.snapshot_frames()
                if time.monotonic() >= next_print:
                    _progress(rec, t0, run_start, args.duration, live)
                    next_print += 1.0 if live else 5.0
                time.sleep(0.05)
        except KeyboardInterrupt:
            print("\ndemo: interrupted, writing the report of what ran", flush=True)
        _progress(rec, t0, run_start, args.duration, live)
        if live:
            print()
        t_end = rec.now()
        frames_end = rec.snapshot_frames()
        with rec.lock:  # a copy: the recorder keeps recording until the graph stops
            d = rec.data
            data = replace(
                d, joint_states=list(d.joint_states), commands=list(d.commands), chunks=list(d.chunks)
            )
            summary = summarize(data, t0, t_end, model, load_s)
        summary["instruction"] = args.instruction
        summary["frames"] = save_frames(frames_start or {}, report, "start") + save_frames(
            frames_end, report, "end"
        )
        summary["plot"] = "trajectories.png"
        plot_trajectories(data, t0, t_end, report / "trajectories.png")
        (report / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    finally:
        runner.shutdown()
    print_summary(summary, report)
    if summary["executed_steps"] == 0:
        print(
            "demo: no action was executed. Policy: "
            f"{summary['policy_message']!r}; executor: {summary['executor_message']!r}",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr)
        return 130


def exit_now_if_inferring(rc: int) -> int:
    """For scripts: a policy worker still inside a long CPU inference cannot be interrupted, and letting
    the interpreter tear down under it aborts the process; exit at once instead (the report is written)."""
    if any(t.name == "smolvla_policy_worker" and t.is_alive() for t in threading.enumerate()):
        print("demo: an inference was still running; exiting without waiting for it", flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


if __name__ == "__main__":
    sys.exit(exit_now_if_inferring(main()))
