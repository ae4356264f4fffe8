"""Record the expert taking over where a policy got stuck (``scripts/record_takeovers.py``).

Recovery data in the manner of DAgger: the expert data of ``record_expert`` never misses a grasp, so a
policy trained on it has never seen what to do after a miss and hovers. Here the ``bench-closed-loop`` graph
(sim, policy, executor nodes) runs a policy on training placements (task seeds below the held-out ones) with
a recorder node beside it. When the policy is stuck (the gripper closed for ``--closed-for`` s without
lifting the cube 1 cm, or no success after ``--stuck-after`` s), the executor is stopped and the expert
plans a pick from where the arm and the cube are (:func:`so100_driver.sim.expert.plan_takeover`); only
the takeover is recorded: the bag starts at it, so its frames and commands show the recovery (open, rise,
grasp again). Episodes the policy solves alone are not recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from rclpy.parameter import Parameter
from std_msgs.msg import String

import so100_driver.sim  # noqa: F401  (selects the headless GL backend before mujoco is imported)
from smolvla_bringup.demo.closed_loop import (
    COMMAND_RATE_HZ,
    TASK,
    Options,
    RowSpec,
    ScorerNode,
    begin_episode,
    graph_parameters,
    start_row,
    wait_for_policy,
)
from smolvla_bringup.demo.model import checkpoint_cameras
from smolvla_common.recorder_node import RecorderNode
from so100_driver.sim.expert import CLOSED, OPEN, GraspIK, plan_takeover
from so100_driver.sim.task import HELD_OUT_SEEDS_FROM
from so100_driver.sim_node import SimArmNode

GRIPPER = 5  # the gripper's index in the sim's joint order
LIFTED_M = 0.01  # a cube this far up is being lifted: not stuck


@dataclass
class TakeoverResult:
    episode: int
    policy_success: bool  # the policy solved it alone (nothing recorded)
    stuck_after_s: float | None  # when the expert took over
    why: str  # what made it stuck
    success: bool | None  # the takeover's outcome (None: no takeover)
    bag: str | None


class StuckDetector:
    """Stuck: the gripper closed for ``closed_for`` s with the cube still on the table, or ``stuck_after``."""

    def __init__(self, closed_for: float, stuck_after: float):
        self.closed_for, self.stuck_after = closed_for, stuck_after
        self.closed_since: float | None = None

    def reset(self) -> None:
        self.closed_since = None

    def why(self, elapsed: float, gripper: float, lift: float) -> str:
        """'' while the attempt goes on; otherwise the reason to take over."""
        closed = gripper < (OPEN + CLOSED) / 2 and lift < LIFTED_M
        self.closed_since = (
            (self.closed_since if self.closed_since is not None else elapsed) if closed else None
        )
        if self.closed_since is not None and elapsed - self.closed_since >= self.closed_for:
            return f"gripper closed {self.closed_for:g} s without lifting the cube"
        if elapsed >= self.stuck_after:
            return f"no success after {self.stuck_after:g} s"
        return ""


def record_takeover(
    scorer: ScorerNode, sim: SimArmNode, recorder: RecorderNode, ik: GraspIK, detector: StuckDetector
) -> TakeoverResult:
    """One episode: the policy tries; if it gets stuck, the expert takes over and the takeover is recorded."""
    episode, _ = begin_episode(scorer, sim, stop_executor=True)
    detector.reset()
    scorer.instruction.publish(String(data=TASK))
    scorer.call("executor/start")
    start = next_tick = time.monotonic()
    why = ""
    while not why and scorer.succeeded_at() is None:
        lift = sim.task.monitor.lift(sim.arm.cube_position())
        why = detector.why(time.monotonic() - start, float(sim.arm.state().position[GRIPPER]), lift)
        next_tick += 1.0 / COMMAND_RATE_HZ
        time.sleep(max(0.0, next_tick - time.monotonic()))
    if not why:
        return TakeoverResult(episode, True, None, "", None, None)
    stuck_after = round(time.monotonic() - start, 2)
    scorer.call("executor/stop")
    time.sleep(0.2)  # the executor's last command is applied; from here on only the expert commands
    ok, bag = recorder.start_episode()
    if not ok:
        raise RuntimeError(f"recorder: {bag}")
    plan = plan_takeover(ik, sim.arm)
    started = next_tick = time.monotonic()
    while (elapsed := time.monotonic() - started) < plan.duration:
        scorer.command(plan.target(elapsed))
        next_tick += 1.0 / COMMAND_RATE_HZ
        time.sleep(max(0.0, next_tick - time.monotonic()))
    success = scorer.succeeded_at() is not None
    recorder.mark_success(success)
    recorder.stop_episode()
    return TakeoverResult(episode, False, stuck_after, why, success, bag)


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the policy whose failures are taken over")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument(
        "--seed", type=int, default=1, help=f"task seed of the placements, 0..{HELD_OUT_SEEDS_FROM - 1}"
    )
    parser.add_argument("--output-dir", default="recordings/takeovers")
    parser.add_argument("--size", type=int, default=128, help="camera width and height (pixels)")
    parser.add_argument(
        "--closed-for", type=float, default=2.0, help="s the gripper may stay closed on nothing"
    )
    parser.add_argument("--stuck-after", type=float, default=10.0, help="s without success before a takeover")
    parser.add_argument("--device", default="cpu", help="torch device of the policy")
    args = parser.parse_args(argv)
    if not 0 <= args.seed < HELD_OUT_SEEDS_FROM:
        parser.error(f"--seed {args.seed}: training seeds are 0..{HELD_OUT_SEEDS_FROM - 1}")
    if args.episodes < 1 or args.closed_for <= 0 or args.stuck_after <= 0:
        parser.error("--episodes must be >= 1, --closed-for and --stuck-after > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    cameras, _ = checkpoint_cameras(args.checkpoint)
    options = Options(
        checkpoint=args.checkpoint,
        seed=args.seed,
        device=args.device,
        cameras=cameras,
        image_size=(args.size, args.size),
    )
    spec = RowSpec("policy", "async", 0.0)
    results: list[TakeoverResult] = []
    with tempfile.TemporaryDirectory(prefix="takeovers_") as folder:
        params_file = Path(folder) / "params.yaml"
        params_file.write_text(yaml.safe_dump(graph_parameters(spec, options), sort_keys=False))
        runner, scorer, sim = start_row(spec, options, params_file)
        try:
            recorder_params = {
                "output_dir": args.output_dir,
                "cameras": [c.split(":")[0] for c in cameras],
                "task": TASK,
            }
            recorder = RecorderNode(
                context=runner.context,
                parameter_overrides=[Parameter(k, value=v) for k, v in recorder_params.items()],
            )
            runner.add_node(recorder)
            error = wait_for_policy(scorer, options.load_timeout_s)
            if error:
                print(f"record-takeovers: {error}", file=sys.stderr)
                return 1
            ik = GraspIK(sim.arm.model)
            detector = StuckDetector(args.closed_for, args.stuck_after)
            for _ in range(args.episodes):
                results.append(record_takeover(scorer, sim, recorder, ik, detector))
                print(json.dumps(asdict(results[-1])), flush=True)
        finally:
            runner.shutdown()
    takeovers = [r for r in results if not r.policy_success]
    summary = {
        "episodes": len(results),
        "policy_successes": len(results) - len(takeovers),
        "takeovers": len(takeovers),
        "takeover_successes": sum(bool(r.success) for r in takeovers),
        "output_dir": args.output_dir,
    }
    print(json.dumps(summary), flush=True)
    return 0
