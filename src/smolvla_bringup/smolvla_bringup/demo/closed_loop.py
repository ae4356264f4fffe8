"""Closed-loop score of a policy on the simulated pick-up task, through the real graph (``make
bench-closed-loop``).

One row of the score is one configuration: the ``sim`` graph's sim, policy and executor nodes (the same
classes and YAML files as ``smolvla-run sim``; the RViz marker node is left out, it only draws) started with
the :class:`~smolvla_bringup.runner.Runner`, the executor in ``sync`` or ``async`` mode and the policy node's
``added_latency_s``. The ``expert`` row replaces policy and executor by the scripted expert
(:mod:`so100_driver.sim.expert`) publishing ``joint_commands`` as ``record_expert`` does: it shows that the
scorer sees a success when there is one.

Each episode: the executor is stopped and the arm sent home, the sim resets to the next placement of the
task seed (``~/reset_episode``), then the instruction is published and the executor started (time zero);
the episode ends when ``/arm/task_success`` turns true (the cube held 3 cm up for 1 s of simulated time, so
the time to success includes that second) or at the timeout. Placements come from task seeds
``>= HELD_OUT_SEEDS_FROM`` (1000), which ``record_expert`` refuses, so no scored placement was a training
episode. Every row of a run uses the same seed, hence the same placements.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rclpy.node import Node
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

import so100_driver.sim  # noqa: F401  (selects the headless GL backend before mujoco is imported)
from smolvla_bringup.demo.model import checkpoint_cameras
from smolvla_bringup.demo.record_expert import one_point_command
from smolvla_common.qos import LATCHED, RELIABLE
from smolvla_msgs.msg import ExecutorStatus, PolicyStatus
from so100_driver.sim.expert import HOME, TOOL_SITE, GraspIK, plan_pick
from so100_driver.sim.task import HELD_OUT_SEEDS_FROM, Placement
from so100_driver.sim_node import SimArmNode

TASK = "pick up the red cube"
HOME_S = 2.0  # time given to the arm to reach home between episodes
COMMAND_RATE_HZ = 30.0  # the expert's commands per second, as record_expert


@dataclass(frozen=True)
class RowSpec:
    """One configuration to score: ``driver`` is ``policy`` or ``expert``."""

    driver: str
    mode: str = "-"  # executor mode (policy rows)
    added_latency_s: float = 0.0

    @property
    def label(self) -> str:
        if self.driver == "expert":
            return "expert"
        return f"policy {self.mode} +{self.added_latency_s:g}s"


@dataclass
class EpisodeResult:
    episode: int  # the sim's episode number within the task seed (1 is the startup placement)
    placement: str
    success: bool
    time_to_success_s: float | None  # from the instruction (wall clock); None without success
    chunks_received: int | None = None  # executor counter over the episode (policy rows)
    idle_ticks: int | None = None  # executor ticks with nothing planned (after its first chunk ever)
    closest_approach_m: float | None = None  # nearest the gripper frame came to the cube's centre
    highest_lift_m: float | None = None  # highest the cube rose above its resting height


@dataclass
class RowResult:
    spec: RowSpec
    episodes: list[EpisodeResult] = field(default_factory=list)
    error: str = ""  # why the row could not run (e.g. the policy could not load its checkpoint)

    def summary(self) -> dict:
        """The row's figures: successes, times to success (median, max), executor counters (sums)."""
        times = [e.time_to_success_s for e in self.episodes if e.time_to_success_s is not None]
        successes = sum(e.success for e in self.episodes)
        total = len(self.episodes)

        def counter_sum(name: str) -> int | None:
            values = [getattr(e, name) for e in self.episodes]
            return None if not values or any(v is None for v in values) else sum(values)

        def median_of(name: str) -> float | None:
            values = [getattr(e, name) for e in self.episodes if getattr(e, name) is not None]
            return statistics.median(values) if values else None

        return {
            "driver": self.spec.driver,
            "mode": self.spec.mode,
            "added_latency_s": self.spec.added_latency_s if self.spec.driver == "policy" else None,
            "successes": successes,
            "episodes": total,
            "success_rate": successes / total if total else 0.0,
            "median_time_to_success_s": statistics.median(times) if times else None,
            "max_time_to_success_s": max(times) if times else None,
            "chunks_received": counter_sum("chunks_received"),
            "idle_ticks": counter_sum("idle_ticks"),
            "median_closest_approach_m": median_of("closest_approach_m"),
            "median_highest_lift_m": median_of("highest_lift_m"),
            "error": self.error,
        }


class ScorerNode(Node):
    """Publishes the instruction and ``joint_commands`` (homing, the expert), watches the task's success and
    the executor's counters, and calls the sim's and the executor's services."""

    def __init__(self, context) -> None:
        super().__init__("closed_loop_scorer", context=context)
        self.instruction = self.create_publisher(String, "instruction", LATCHED)
        self.commands = self.create_publisher(JointTrajectory, "joint_commands", 10)
        self._lock = threading.Lock()
        self.success: bool | None = None  # the last value of arm/task_success
        self.success_at: float | None = None  # monotonic time it turned true
        self.executor_status: ExecutorStatus | None = None
        self.policy_status: PolicyStatus | None = None
        self.create_subscription(Bool, "arm/task_success", self._on_success, LATCHED)
        self.create_subscription(ExecutorStatus, "smolvla/executor_status", self._on_executor, RELIABLE)
        self.create_subscription(PolicyStatus, "smolvla/policy_status", self._on_policy, RELIABLE)
        self.clients_by_service = {
            name: self.create_client(Trigger, name)
            for name in ("arm/reset_episode", "executor/start", "executor/stop")
        }

    def _on_success(self, msg: Bool) -> None:
        with self._lock:
            if msg.data and not self.success:
                self.success_at = time.monotonic()
            self.success = bool(msg.data)

    def _on_executor(self, msg: ExecutorStatus) -> None:
        self.executor_status = msg

    def _on_policy(self, msg: PolicyStatus) -> None:
        self.policy_status = msg

    def succeeded_at(self) -> float | None:
        """Monotonic time the current episode's success arrived, or None while it has not."""
        with self._lock:
            return self.success_at if self.success else None

    def call(self, service: str, timeout: float = 10.0) -> str:
        """Call a Trigger service of the graph; its message, or RuntimeError naming it."""
        client = self.clients_by_service[service]
        if not client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"service {service} not available after {timeout:g} s")
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done() or not future.result().success:
            reason = future.result().message if future.done() else "no answer"
            raise RuntimeError(f"service {service} failed: {reason}")
        return future.result().message

    def command(self, positions: Sequence[float], time_from_start: float = 0.0) -> None:
        """One stamped point on ``joint_commands`` (rad, the sim's joint order)."""
        self.commands.publish(one_point_command(self, positions, time_from_start))

    def counters(self) -> tuple[int, int] | None:
        """(chunks received, idle ticks) of the executor's last status, None without one."""
        status = self.executor_status
        return None if status is None else (int(status.chunks_received), int(status.idle_ticks))


def wait_until(predicate: Callable[[], object], timeout: float, period: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return bool(predicate())


@dataclass
class Options:
    """What every row shares."""

    checkpoint: str
    episodes: int = 3
    seed: int = HELD_OUT_SEEDS_FROM
    timeout_s: float = 30.0
    device: str = "cpu"
    cameras: tuple[str, ...] = ()  # policy camera entries; () = from the checkpoint
    image_size: tuple[int, int] = (256, 256)  # (height, width) rendered by the sim
    camera_fps: float = 15.0
    load_timeout_s: float = 120.0
    extra_params: tuple[str, ...] = ()  # parameter files applied after the row's own (``--params``)
    noise_seed: int = -1  # the policy's sampling noise seed (-1: fresh noise)
    noise_scale: float = 1.0  # the policy's noise_scale (1: sampling as LeRobot does)
    log: Callable[[str], None] = print


def graph_parameters(spec: RowSpec, options: Options) -> dict:
    """The parameter file of a row, applied after the sim graph's YAML files (as ``--params``)."""
    sim_cameras = [c.split(":")[0] for c in options.cameras] or ["top", "wrist"]
    arm = {
        "cameras": sim_cameras,
        "camera_height": options.image_size[0],
        "camera_width": options.image_size[1],
        "camera_fps": options.camera_fps,
        "task_seed": options.seed,
        "initial_positions": HOME.tolist(),
    }
    params = {"/**/arm": {"ros__parameters": arm}}
    if spec.driver == "policy":
        params["/**/policy"] = {
            "ros__parameters": {
                "checkpoint": options.checkpoint,
                "cameras": list(options.cameras),
                "device": options.device,
                "image_resize": "resize",
                "max_observation_age_s": 2.0,
                "added_latency_s": float(spec.added_latency_s),
                "noise_seed": options.noise_seed,
                "noise_scale": options.noise_scale,
            }
        }
        params["/**/executor"] = {"ros__parameters": {"mode": spec.mode, "start_on_launch": False}}
    return params


def start_row(spec: RowSpec, options: Options, params_file: Path):
    from smolvla_bringup import graph
    from smolvla_bringup.runner import Runner

    files, nodes = graph.graph("sim")
    keep = (graph.SIM,) if spec.driver == "expert" else (graph.SIM, graph.POLICY, graph.EXECUTOR)
    runner = Runner([n for n in nodes if n in keep], [*files, params_file, *options.extra_params])
    runner.start()
    scorer = ScorerNode(runner.context)
    runner.add_node(scorer)
    sim = next(n for n in runner.nodes if isinstance(n, SimArmNode))
    return runner, scorer, sim


def wait_for_policy(scorer: ScorerNode, timeout: float) -> str:
    """'' once the policy is READY (or INFERRING); otherwise why not."""

    def settled() -> bool:
        status = scorer.policy_status
        return status is not None and status.state != PolicyStatus.STATE_LOADING

    if not wait_until(settled, timeout, 0.1):
        return f"the policy did not load within {timeout:g} s"
    status = scorer.policy_status
    if status.state == PolicyStatus.STATE_ERROR:
        return f"the policy could not start: {status.message}"
    return ""


def begin_episode(scorer: ScorerNode, sim: SimArmNode, stop_executor: bool) -> tuple[int, Placement]:
    """Home the arm (the executor stopped first when it runs), reset the scene to the next placement and
    wait until the reset is seen; the episode number and its placement."""
    if stop_executor:
        scorer.call("executor/stop")
    scorer.command(HOME, time_from_start=1.5)
    time.sleep(HOME_S)
    scorer.call("arm/reset_episode")
    episode, placement = sim.task.episode, sim.task.placement
    # the reset's success=false arrives (a stale true cannot count); the cameras show the new placement
    wait_until(lambda: scorer.success is False, 2.0)
    time.sleep(0.3)
    return episode, placement


def run_episode(
    spec: RowSpec,
    scorer: ScorerNode,
    sim: SimArmNode,
    ik: GraspIK | None,
    timeout_s: float,
    *,
    instruction: str = TASK,
    on_tick: Callable[[], None] | None = None,
) -> EpisodeResult:
    """Home, reset to the next held-out placement, instruct, and wait for success or the timeout.

    ``ik`` plans the expert's grasp (expert rows only); ``on_tick`` is called at every command tick (30 Hz).
    """
    policy = spec.driver == "policy"
    episode, placement = begin_episode(scorer, sim, stop_executor=policy)
    before = scorer.counters()
    plan = None
    if not policy:
        plan = plan_pick(ik, placement, float(sim.arm.cube_position()[2]), start=sim.arm.state().position)
    start = time.monotonic()
    scorer.instruction.publish(String(data=instruction))
    if policy:
        scorer.call("executor/start")
    next_tick = start
    closest = math.inf
    while (elapsed := time.monotonic() - start) < timeout_s and scorer.succeeded_at() is None:
        if plan is not None and elapsed < plan.duration:
            scorer.command(plan.target(elapsed))
        gap = sim.arm.site_position(TOOL_SITE) - sim.arm.cube_position()
        closest = min(closest, float(np.linalg.norm(gap)))
        if on_tick is not None:
            on_tick()
        next_tick += 1.0 / COMMAND_RATE_HZ
        time.sleep(max(0.0, next_tick - time.monotonic()))
    done_at = scorer.succeeded_at()
    after = scorer.counters()
    chunks = idle = None
    if policy and before is not None and after is not None:
        chunks, idle = after[0] - before[0], after[1] - before[1]
    return EpisodeResult(
        episode=episode,
        placement=f"x={placement.x:.3f} y={placement.y:.3f} yaw={placement.yaw:.3f}",
        success=done_at is not None,
        time_to_success_s=None if done_at is None else round(done_at - start, 3),
        chunks_received=chunks,
        idle_ticks=idle,
        closest_approach_m=round(closest, 4) if math.isfinite(closest) else None,
        highest_lift_m=round(max(sim.task.monitor.highest, 0.0), 4),
    )


def score_row(spec: RowSpec, options: Options) -> RowResult:
    """Start the row's graph, run its episodes, shut it down."""
    import yaml

    result = RowResult(spec)
    with tempfile.TemporaryDirectory(prefix="closed_loop_") as folder:
        params_file = Path(folder) / "params.yaml"
        params_file.write_text(yaml.safe_dump(graph_parameters(spec, options), sort_keys=False))
        runner, scorer, sim = start_row(spec, options, params_file)
        try:
            if spec.driver == "policy":
                result.error = wait_for_policy(scorer, options.load_timeout_s)
                if not result.error and not wait_until(lambda: scorer.executor_status is not None, 10.0):
                    result.error = "no status from the executor"
            if result.error:
                options.log(f"{spec.label}: {result.error}")
                return result
            ik = GraspIK(sim.arm.model)
            for _ in range(options.episodes):
                episode = run_episode(spec, scorer, sim, ik, options.timeout_s)
                result.episodes.append(episode)
                options.log(f"{spec.label}: {json.dumps(asdict(episode))}")
        finally:
            runner.shutdown()
    return result


def score(specs: Sequence[RowSpec], options: Options) -> list[RowResult]:
    return [score_row(spec, options) for spec in specs]


# ------------------------------------------------------------------------------------------------ report


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def centimetres(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def table(results: Sequence[RowResult]) -> str:
    """The markdown table of the rows (one line each)."""
    lines = [
        "| driver | mode | added latency | success | median / max time to success (s) | chunks received "
        "| idle ticks | median closest approach / lift (cm) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        s = row.summary()
        latency = "-" if s["added_latency_s"] is None else f"{s['added_latency_s']:g} s"
        success = f"{s['successes']}/{s['episodes']} ({100 * s['success_rate']:.0f}%)"
        if row.error:
            success = f"not run: {row.error}"
        times = f"{_seconds(s['median_time_to_success_s'])} / {_seconds(s['max_time_to_success_s'])}"
        lines.append(
            f"| {s['driver']} | {s['mode']} | {latency} | {success} | {times} "
            f"| {_count(s['chunks_received'])} | {_count(s['idle_ticks'])} "
            f"| {centimetres(s['median_closest_approach_m'])} / {centimetres(s['median_highest_lift_m'])} |"
        )
    return "\n".join(lines)


def write_report(results: Sequence[RowResult], options: Options, folder: Path, command: str) -> Path:
    """``results.json`` (rows with their episodes) and ``table.md`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "command": command,
        "checkpoint": options.checkpoint,
        "seed": options.seed,
        "episodes": options.episodes,
        "timeout_s": options.timeout_s,
        "rows": [{**r.summary(), "episodes_detail": [asdict(e) for e in r.episodes]} for r in results],
    }
    (folder / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    header = (
        f"Closed-loop score, task seed {options.seed}, {options.episodes} episodes per row, timeout "
        f"{options.timeout_s:g} s, checkpoint {options.checkpoint}\n\n`{command}`\n\n"
    )
    (folder / "table.md").write_text(header + table(results) + "\n")
    return folder


# ------------------------------------------------------------------------------------------------ CLI


def add_noise_arguments(parser: argparse.ArgumentParser) -> None:
    """``--noise-seed`` and ``--noise-scale``: the policy's sampling noise in every scored episode."""
    parser.add_argument(
        "--noise-seed",
        type=int,
        default=-1,
        help="seed of the policy's sampling noise (its noise_seed); -1 (default): fresh noise",
    )
    parser.add_argument(
        "--noise-scale",
        type=float,
        default=1.0,
        help="scale of the policy's sampling noise (its noise_scale): 1 (default) samples as LeRobot does, "
        "0 starts each chunk from the noise's mean (repeatable scores)",
    )


def check_noise_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what the policy node would refuse, before any node starts."""
    if not (args.noise_scale >= 0 and math.isfinite(args.noise_scale)):
        parser.error(f"--noise-scale {args.noise_scale}: must be a finite number >= 0")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument(
        "--checkpoint", default="", help="SmolVLA checkpoint; default: the tiny random (UNTRAINED) demo model"
    )
    parser.add_argument("--episodes", type=int, default=3, help="episodes per row")
    parser.add_argument(
        "--seed",
        type=int,
        default=HELD_OUT_SEEDS_FROM,
        help=f"task seed of the placements (held out: >= {HELD_OUT_SEEDS_FROM})",
    )
    add_noise_arguments(parser)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per episode before a failure")
    parser.add_argument("--modes", default="sync,async", help="executor modes, comma-separated")
    parser.add_argument("--latencies", default="0", help="added inference latencies (s), comma-separated")
    parser.add_argument("--expert", action="store_true", help="add the scripted expert's row")
    parser.add_argument("--no-policy", action="store_true", help="only the expert's row")
    parser.add_argument("--device", default="cpu", help="torch device of the policy")
    parser.add_argument("--load-timeout", type=float, default=120.0, help="seconds for the model to load")
    parser.add_argument("--report-dir", default="reports", help="where closed-loop-<time>/ is written")
    parser.add_argument(
        "--params",
        action="append",
        default=[],
        metavar="FILE",
        help="ROS parameter YAML applied after the row's own, to score another configuration (for example "
        "the executor's threshold or blend); repeatable",
    )
    args = parser.parse_args(argv)
    missing = [f for f in args.params if not Path(f).is_file()]
    if missing:
        parser.error(f"--params {missing[0]}: no such file")
    if args.seed < HELD_OUT_SEEDS_FROM:
        parser.error(
            f"--seed {args.seed}: seeds below {HELD_OUT_SEEDS_FROM} are record_expert's training seeds"
        )
    check_noise_arguments(parser, args)
    if args.episodes < 1 or args.timeout <= 0:
        parser.error("--episodes must be >= 1 and --timeout > 0")
    try:
        args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
        args.latency_list = [float(v) for v in args.latencies.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--latencies {args.latencies!r}: expected numbers like 0,0.3,0.8")
    if any(m not in ("sync", "async") for m in args.mode_list):
        parser.error(f"--modes {args.modes!r}: expected sync and/or async")
    if any(v < 0 for v in args.latency_list):
        parser.error(f"--latencies {args.latencies!r}: latencies must be >= 0")
    if args.no_policy and not args.expert:
        parser.error("--no-policy needs --expert")
    return args


def row_specs(args: argparse.Namespace) -> list[RowSpec]:
    specs = [RowSpec("expert")] if args.expert else []
    if not args.no_policy:
        specs += [RowSpec("policy", m, v) for m in args.mode_list for v in args.latency_list]
    return specs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    checkpoint = args.checkpoint
    if not checkpoint:
        from smolvla_bringup.demo.model import GENERATED_VERSION, cache_dir, make_demo_checkpoint

        checkpoint = str(make_demo_checkpoint(cache_dir() / f"demo-tiny-{GENERATED_VERSION}", tiny=True))
        print(f"closed-loop: no --checkpoint: the tiny random demo model, UNTRAINED ({checkpoint})")
    cameras, size = checkpoint_cameras(checkpoint)
    options = Options(
        checkpoint=checkpoint,
        episodes=args.episodes,
        seed=args.seed,
        timeout_s=args.timeout,
        device=args.device,
        cameras=cameras,
        image_size=size,
        load_timeout_s=args.load_timeout,
        extra_params=tuple(str(Path(f).resolve()) for f in args.params),
        noise_seed=args.noise_seed,
        noise_scale=args.noise_scale,
    )
    results = score(row_specs(args), options)
    command = "python benchmarks/bench_closed_loop.py " + " ".join(sys.argv[1:] if argv is None else argv)
    folder = write_report(
        results, options, Path(args.report_dir) / f"closed-loop-{time.strftime('%Y%m%d-%H%M%S')}", command
    )
    print(table(results))
    print(f"closed-loop: report in {folder}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
