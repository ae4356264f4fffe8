"""Record expert episodes of the pick-up task through the real graph (``scripts/record_expert.py``).

In one process: the sim node (MuJoCo, cameras, seeded task), the recorder node (one bag per episode) and an
``expert`` node standing in for a leader arm: for each episode it sends the arm home, asks the sim for the
next episode (``/arm/reset_episode``), starts the recorder, plans the pick from the true cube pose
(:mod:`so100_driver.sim.expert`) and publishes one stamped point on ``joint_commands`` per tick (as a
mirroring leader does), then marks the episode's success from ``/arm/task_success`` and stops the bag.
(The sim's startup placement is episode 1 of ``task_seed``; recorded episodes are 2, 3, ...)
Everything recorded went over DDS like on a robot; only the plan reads the simulator (the expert is told
where the cube is).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

import so100_driver.sim  # noqa: F401  (selects the headless GL backend before mujoco is imported)
from smolvla_common.qos import LATCHED
from smolvla_common.recorder_node import RecorderNode
from smolvla_common.timeutil import duration_msg
from so100_driver.sim.expert import HOME, GraspIK, plan_pick
from so100_driver.sim.scene import JOINT_NAMES
from so100_driver.sim.task import HELD_OUT_SEEDS_FROM
from so100_driver.sim_node import SimArmNode

TASK = "pick up the red cube"


def one_point_command(node: Node, positions, time_from_start: float = 0.0) -> JointTrajectory:
    """One point (rad, the sim's joint order) stamped now on ``node``'s clock, as a leader arm sends it."""
    msg = JointTrajectory(joint_names=list(JOINT_NAMES))
    msg.header.stamp = node.get_clock().now().to_msg()
    point = JointTrajectoryPoint(
        positions=[float(p) for p in positions], time_from_start=duration_msg(time_from_start)
    )
    msg.points = [point]
    return msg


class ExpertLeader(Node):
    """Publishes the expert's joint targets on ``joint_commands`` and follows ``/arm/task_success``."""

    def __init__(self, context, rate_hz: float):
        super().__init__("expert", context=context)
        self.period = 1.0 / rate_hz
        self.commands = self.create_publisher(JointTrajectory, "joint_commands", 10)
        self.instruction = self.create_publisher(String, "instruction", LATCHED)
        self.success = False
        self.create_subscription(Bool, "arm/task_success", self._on_success, LATCHED)
        self.reset = self.create_client(Trigger, "arm/reset_episode")

    def _on_success(self, msg: Bool) -> None:
        self.success = bool(msg.data)

    def command(self, positions, time_from_start: float = 0.0) -> None:
        self.commands.publish(one_point_command(self, positions, time_from_start))

    def call_reset(self, timeout: float = 5.0) -> str:
        if not self.reset.wait_for_service(timeout_sec=timeout):
            raise RuntimeError("/arm/reset_episode not available")
        future = self.reset.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done() or not future.result().success:
            raise RuntimeError("/arm/reset_episode failed")
        return future.result().message

    def play(self, plan) -> None:
        """The plan's targets, one stamped point per tick, timed by the node clock from now."""
        start = next_tick = time.monotonic()
        while (elapsed := time.monotonic() - start) < plan.duration:
            self.command(plan.target(elapsed))
            next_tick += self.period
            time.sleep(max(0.0, next_tick - time.monotonic()))


def record_episode(sim: SimArmNode, recorder: RecorderNode, expert: ExpertLeader, ik: GraspIK) -> dict:
    expert.command(HOME, time_from_start=1.5)  # home, not recorded
    time.sleep(2.0)
    message = expert.call_reset()
    placement = sim.task.placement
    time.sleep(0.3)  # the reset's success=false arrives; frames show the new placement
    ok, info = recorder.start_episode()
    if not ok:
        raise RuntimeError(f"recorder: {info}")
    plan = plan_pick(ik, placement, float(sim.arm.cube_position()[2]), start=sim.arm.state().position)
    expert.play(plan)
    success = expert.success
    recorder.mark_success(success)
    recorder.stop_episode()
    return {"episode": sim.task.episode, "reset": message, "success": success, "bag": info}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help=f"task_seed of the sim (placements), 0..{HELD_OUT_SEEDS_FROM - 1} (higher seeds are held out "
        "for scoring)",
    )
    parser.add_argument("--output-dir", default="recordings/expert")
    parser.add_argument("--cameras", nargs="+", default=["top", "wrist"])
    parser.add_argument("--size", type=int, default=256, help="camera width and height (pixels)")
    parser.add_argument("--camera-fps", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=30.0, help="expert commands per second")
    args = parser.parse_args(argv)
    if not 0 <= args.seed < HELD_OUT_SEEDS_FROM:
        parser.error(
            f"--seed {args.seed}: training seeds are 0..{HELD_OUT_SEEDS_FROM - 1}; seeds from "
            f"{HELD_OUT_SEEDS_FROM} on are held out for make bench-closed-loop"
        )
    return args


def start_nodes(context, args) -> tuple[SimArmNode, RecorderNode, ExpertLeader]:
    sim_params = {
        "cameras": args.cameras,
        "camera_width": args.size,
        "camera_height": args.size,
        "camera_fps": args.camera_fps,
        "task_seed": args.seed,
        "initial_positions": HOME.tolist(),
    }
    recorder_params = {"output_dir": args.output_dir, "cameras": args.cameras, "task": TASK}
    sim = SimArmNode(
        context=context, parameter_overrides=[Parameter(k, value=v) for k, v in sim_params.items()]
    )
    recorder = RecorderNode(
        context=context, parameter_overrides=[Parameter(k, value=v) for k, v in recorder_params.items()]
    )
    return sim, recorder, ExpertLeader(context, args.rate)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    context = rclpy.Context()
    rclpy.init(context=context)
    nodes = start_nodes(context, args)
    sim, recorder, expert = nodes
    executor = SingleThreadedExecutor(context=context)
    for node in nodes:
        executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    results = []
    try:
        expert.instruction.publish(String(data=TASK))
        ik = GraspIK(sim.arm.model)
        for _ in range(args.episodes):
            results.append(record_episode(sim, recorder, expert, ik))
            print(json.dumps(results[-1]), flush=True)
    finally:
        executor.shutdown(timeout_sec=5.0)
        spinner.join(timeout=5.0)
        for node in nodes:
            node.destroy_node()
        rclpy.shutdown(context=context)
    rate = float(np.mean([r["success"] for r in results])) if results else 0.0
    summary = {"episodes": len(results), "success_rate": rate, "output_dir": str(Path(args.output_dir))}
    print(json.dumps(summary), flush=True)
    return 0 if results else 1
