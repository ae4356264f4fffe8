"""Simulated SO-101 node: the real arm node's and camera nodes' interfaces on a MuJoCo simulation.

Thin wiring around :mod:`so100_driver.sim`. Named ``arm`` like the real arm node, with relative topics like
it: publishes ``joint_states`` (rad, rad/s, N·m), ``~/commanded`` (goals after clamping, ``max_velocity``
and ``max_step``), ``~/status`` (smolvla_msgs/ArmStatus, latched, with the safety epoch), ``/diagnostics``
and ``cameras/<name>/image_raw`` (rgb8, sensor-data QoS, stamped with the simulated instant the frame
shows); subscribes ``joint_commands`` (trajectory_msgs/JointTrajectory, stamped; commands stamped before the
latest torque-on are ignored: the real node's :class:`~so100_driver.arm.commands.JointTargets`); serves
``~/torque`` (std_srvs/SetBool), ``~/reset_cube`` and ``~/reset_episode`` (the pick-up task of
:mod:`so100_driver.sim.task`: seeded placements, success latched on ``~/task_success``). With
``publish_clock`` it also publishes ``/clock`` (simulated time) for nodes running with ``use_sim_time``.

Threads: physics and one renderer per camera run on the :class:`~so100_driver.sim.runtime.SimRuntime`
threads; the node's executor thread takes commands and services.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from smolvla_common.arm_status import arm_status_msg
from smolvla_common.image_conversion import rgb_to_image_msg
from smolvla_common.node_main import run_node
from smolvla_common.parameters import ParameterError, declare_parameters, require
from smolvla_common.qos import LATCHED, sensor_qos
from smolvla_common.timeutil import clock_seconds, seconds
from smolvla_msgs.msg import ArmStatus
from so100_driver.arm.commands import UNSTAMPED, CommandError, JointTargets, RejectionLog
from so100_driver.sim.arm import SimArm, SimSnapshot  # (importing so100_driver.sim selects MUJOCO_GL first)
from so100_driver.sim.render import RenderError
from so100_driver.sim.runtime import SimRuntime
from so100_driver.sim.scene import CAMERA_MOUNTS, JOINT_NAMES, SceneConfig, SimCamera, build_model
from so100_driver.sim.task import EpisodeTask, Placement, PlacementSampler, TaskRegion

DEFAULTS = {
    "joint_names": list(JOINT_NAMES),
    "control_rate_hz": 100.0,
    "joint_state_rate_hz": 100.0,
    "diagnostics_rate_hz": 2.0,
    "max_step": 0.1,
    "max_velocity": 3.0,
    "enable_torque_on_start": True,
    "initial_positions": [0.0] * len(JOINT_NAMES),
    "cameras": ["top", "wrist"],
    "camera_width": 256,
    "camera_height": 256,
    "camera_fps": 15.0,
    "reliability": "best_effort",
    "qos_depth": 1,
    "cube_position": [0.24, 0.08],
    "cube_yaw": 0.0,
    "cube_size": 0.03,
    "cube_position_noise": 0.0,
    "target_position": [0.22, -0.12],
    "seed": 0,
    "realtime_factor": 1.0,
    "publish_clock": False,
    "mesh_keep_fraction": 0.3,
    "task_seed": -1,
    "task_region": [0.18, 0.30, -0.10, 0.12],
    "task_max_yaw": 0.785,
    "task_lift_height": 0.03,
    "task_hold_s": 1.0,
}
POSITIVE = (
    "control_rate_hz",
    "joint_state_rate_hz",
    "diagnostics_rate_hz",
    "camera_fps",
    "max_step",
    "max_velocity",
)


def _finite_list(name: str, values, length: int) -> list[float]:
    numbers = [float(v) for v in values]
    require(
        len(numbers) == length and all(map(math.isfinite, numbers)), name, f"{length} finite numbers", values
    )
    return numbers


def check_parameters(p: dict) -> None:
    """Range checks of the sim's parameters (types are checked when they are declared)."""
    require(
        sorted(p["joint_names"]) == sorted(JOINT_NAMES),
        "joint_names",
        f"each of {list(JOINT_NAMES)} once",
        p["joint_names"],
    )
    for name in POSITIVE:
        require(p[name] > 0.0, name, "a value > 0", p[name])
    require(
        p["joint_state_rate_hz"] <= p["control_rate_hz"],
        "joint_state_rate_hz",
        "at most control_rate_hz",
        p["joint_state_rate_hz"],
    )
    require(
        0.0 < p["realtime_factor"] <= 100.0, "realtime_factor", "a value in (0, 100]", p["realtime_factor"]
    )
    require(
        0.0 <= p["cube_position_noise"] <= 0.2,
        "cube_position_noise",
        "a value in [0, 0.2] (m)",
        p["cube_position_noise"],
    )
    require(p["task_lift_height"] > 0.0, "task_lift_height", "a value > 0 (m)", p["task_lift_height"])
    require(p["task_hold_s"] >= 0.0, "task_hold_s", "a value >= 0 (s)", p["task_hold_s"])
    unknown = [name for name in p["cameras"] if name not in CAMERA_MOUNTS]
    require(not unknown, "cameras", f"names among {list(CAMERA_MOUNTS)}", p["cameras"])


def task_region_from(p: dict) -> TaskRegion:
    try:
        return TaskRegion.from_list(p["task_region"], p["task_max_yaw"])
    except ValueError as error:
        raise ParameterError(f"invalid task parameter: {error}") from error


def scene_config_from(p: dict, cube: Sequence[float]) -> SceneConfig:
    target = p["target_position"]
    target = tuple(_finite_list("target_position", target, 2)) if len(target) else None
    try:
        cameras = tuple(SimCamera(n, p["camera_width"], p["camera_height"]) for n in p["cameras"])
        return SceneConfig(
            cameras=cameras,
            cube_position=(cube[0], cube[1]),
            cube_yaw=p["cube_yaw"],
            cube_size=p["cube_size"],
            target_position=target,
            mesh_keep_fraction=p["mesh_keep_fraction"],
        )
    except ValueError as error:
        raise ParameterError(f"invalid scene parameter: {error}") from error


class SimArmNode(Node):
    def __init__(self, **kwargs):
        super().__init__(kwargs.pop("node_name", "arm"), **kwargs)
        self.runtime: SimRuntime | None = None
        try:
            self._setup()
        except BaseException:  # also KeyboardInterrupt: a node that failed to start leaves nothing behind
            self.destroy_node()
            raise

    def _setup(self) -> None:
        p = declare_parameters(self, DEFAULTS)
        check_parameters(p)
        self.joint_names = list(p["joint_names"])
        self._order = np.array([JOINT_NAMES.index(name) for name in self.joint_names])
        initial = self._to_model_order(
            np.asarray(_finite_list("initial_positions", p["initial_positions"], len(JOINT_NAMES)))
        )
        qos = sensor_qos(p["reliability"], p["qos_depth"])
        self._cube_nominal = np.asarray(_finite_list("cube_position", p["cube_position"], 2))
        self._cube_noise = p["cube_position_noise"]
        self._cube_yaw = p["cube_yaw"]
        self._rng = np.random.default_rng(p["seed"])  # each reset draws the next cube position
        scene = scene_config_from(p, self._next_cube_position())
        self.arm = SimArm(
            build_model(scene),
            initial_positions=initial,
            control_period=1.0 / p["control_rate_hz"],
            max_step=p["max_step"],
            max_velocity=p["max_velocity"],
        )
        self.commands = JointTargets(JOINT_NAMES, dict(zip(JOINT_NAMES, self.arm.goal, strict=True)))
        self.rejections = RejectionLog()
        self.epoch = 0
        self.enabled_since: float | None = None
        self.publish_clock = p["publish_clock"]
        self._clock_origin = math.floor(time.time())  # /clock starts at the wall time of startup
        self._create_interfaces(scene, qos)
        self._task_seeded = p["task_seed"] >= 0
        self.task = EpisodeTask(
            self.arm,
            PlacementSampler(p["task_seed"] if self._task_seeded else 0, task_region_from(p)),
            p["task_lift_height"],
            p["task_hold_s"],
        )
        self.task.reset(None if self._task_seeded else Placement(*scene.cube_position, scene.cube_yaw))
        self.task_pub.publish(Bool(data=False))
        self.runtime = SimRuntime(
            self.arm,
            scene.cameras,
            p["camera_fps"],
            now=time.monotonic if self.publish_clock else self._node_seconds,
            command_for=self._requested,
            on_state=self._publish_state,
            on_frame=self._publish_frame,
            on_tick=self._publish_clock if self.publish_clock else None,
            state_rate=p["joint_state_rate_hz"],
            realtime_factor=p["realtime_factor"],
        )
        if p["enable_torque_on_start"]:
            self._torque_on()
        else:
            self.arm.set_torque(False)
        self._publish_status()
        self._diag_period = 1.0 / p["diagnostics_rate_hz"]
        self._next_diag_time = 0.0
        self.runtime.start()
        size = f"{p['camera_width']}x{p['camera_height']}"
        self.get_logger().info(
            f"simulated SO-101 running (MUJOCO_GL={os.environ.get('MUJOCO_GL', 'default')}): cameras "
            f"{[c.name for c in scene.cameras]} {size} @ {p['camera_fps']} fps, "
            f"{'publishing /clock' if self.publish_clock else 'paced by the node clock'}"
        )

    def _create_interfaces(self, scene: SceneConfig, qos) -> None:
        self.state_pub = self.create_publisher(JointState, "joint_states", 10)
        self.commanded_pub = self.create_publisher(JointState, "~/commanded", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.status_pub = self.create_publisher(ArmStatus, "~/status", LATCHED)
        self.clock_pub = self.create_publisher(Clock, "/clock", 10) if self.publish_clock else None
        self.image_pubs = {
            c.name: self.create_publisher(Image, f"cameras/{c.name}/image_raw", qos) for c in scene.cameras
        }
        self.frame_ids = {c.name: f"{c.name}_optical_frame" for c in scene.cameras}
        self.create_subscription(JointTrajectory, "joint_commands", self._on_command, 10)
        self.create_service(SetBool, "~/torque", self._on_torque)
        self.create_service(Trigger, "~/reset_cube", self._on_reset_cube)
        self.create_service(Trigger, "~/reset_episode", self._on_reset_episode)
        self.task_pub = self.create_publisher(Bool, "~/task_success", LATCHED)

    def _to_model_order(self, values: np.ndarray) -> np.ndarray:
        ordered = np.empty(len(JOINT_NAMES))
        ordered[self._order] = values
        return ordered

    # ------------------------------------------------------------------------------ time
    def _node_seconds(self) -> float:
        return clock_seconds(self)

    def _stamp_seconds(self, sim_time: float) -> float:
        """The time (node clock, or /clock when we publish it) at which the simulation shows ``sim_time``."""
        if self.publish_clock:
            return self._clock_origin + sim_time
        return self.runtime.pacing_time(sim_time)

    def _stamp(self, sim_time: float):
        return Time(nanoseconds=round(self._stamp_seconds(sim_time) * 1e9)).to_msg()

    # ------------------------------------------------------------------------------ callbacks
    def _command_now(self) -> float:
        """Now, on the time base of command stamps (the /clock we publish, or the node clock)."""
        return self._stamp_seconds(self.arm.time) if self.publish_clock else self._node_seconds()

    def _requested(self, sim_time: float) -> np.ndarray:
        """The joints' targets for the simulated instant ``sim_time``, in model order."""
        targets = self.commands.sample(self._stamp_seconds(sim_time))
        return np.array([targets[name] for name in JOINT_NAMES])

    def _on_command(self, msg: JointTrajectory) -> None:
        stamp = seconds(msg.header.stamp)
        points = [(seconds(p.time_from_start), list(p.positions)) for p in msg.points]
        disabled = (
            ""
            if self.arm.torque_enabled
            else "arm is disabled: enable torque first (std_srvs/SetBool on the torque service)"
        )
        try:
            if stamp == 0:
                self.commands.reject(UNSTAMPED)
            self.commands.command(self._command_now(), list(msg.joint_names), points, stamp, disabled)
        except CommandError as error:
            if self.rejections.first(str(error)):  # each cause once per torque episode, then counted
                self.get_logger().error(
                    f"joint_commands rejected: {error} (logged once; more of the same are counted in "
                    "/diagnostics 'arm: simulation' rejections_by_cause)"
                )

    def _hold_here(self, enabled_since: float | None = None) -> None:
        self.commands.hold(dict(zip(JOINT_NAMES, self.arm.state().position, strict=True)), enabled_since)

    def _torque_on(self) -> None:
        """Torque on holding the present position: a new safety epoch, older commands are refused."""
        self.arm.set_torque(True)
        self.epoch += 1
        self.enabled_since = self._command_now()
        self._hold_here(self.enabled_since)

    def _on_torque(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        enable = bool(request.data)
        response.success = True
        if enable == self.arm.torque_enabled:
            response.message = f"torque already {'enabled' if enable else 'disabled'}"
            return response
        if enable:
            self._torque_on()
        else:
            self._hold_here()  # drop the plan
            self.arm.set_torque(False)
        response.message = f"torque {'enabled' if enable else 'disabled'} (simulation)"
        self.get_logger().info(response.message)
        self._publish_status()
        return response

    def _publish_status(self) -> None:
        self.rejections.new_episode()
        enabled = self.arm.torque_enabled
        stamp = self.get_clock().now().to_msg()
        message = "torque on (simulation)" if enabled else "torque off (simulation)"
        state = "enabled" if enabled else "idle"
        self.status_pub.publish(arm_status_msg(stamp, state, self.epoch, self.enabled_since, message))

    def _next_cube_position(self) -> np.ndarray:
        return self._cube_nominal + self._rng.uniform(-self._cube_noise, self._cube_noise, 2)

    def _on_reset_cube(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        x, y = self._next_cube_position()
        self.arm.place_cube(x, y, self._cube_yaw)
        response.success = True
        response.message = f"cube placed at x={x:.3f} m, y={y:.3f} m"
        self.get_logger().info(response.message)
        return response

    def _on_reset_episode(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """The next episode: the next seeded placement (``task_seed`` >= 0) or the next cube position."""
        fixed = None if self._task_seeded else Placement(*self._next_cube_position(), self._cube_yaw)
        p = self.task.reset(fixed)
        self.task_pub.publish(Bool(data=False))
        response.success = True
        response.message = (
            f"episode {self.task.episode}: cube at x={p.x:.3f} m, y={p.y:.3f} m, yaw={p.yaw:.3f} rad"
        )
        self.get_logger().info(response.message)
        return response

    def _publish_state(self, state: SimSnapshot) -> None:
        changed = self.task.update(state.time)
        if changed is not None:
            self.task_pub.publish(Bool(data=changed))
        stamp = self._stamp(state.time)
        msg = JointState(
            name=self.joint_names,
            position=state.position[self._order].tolist(),
            velocity=state.velocity[self._order].tolist(),
            effort=state.effort[self._order].tolist(),
        )
        msg.header.stamp = stamp
        self.state_pub.publish(msg)
        if state.torque_enabled:
            commanded = JointState(name=self.joint_names, position=state.goal[self._order].tolist())
            commanded.header.stamp = stamp
            self.commanded_pub.publish(commanded)
        if state.time >= self._next_diag_time:
            self._next_diag_time = state.time + self._diag_period * self.runtime.realtime_factor
            self.diag_pub.publish(self._diagnostics(stamp, state))
            self._publish_status()

    def _publish_frame(self, name: str, sim_time: float, image: np.ndarray) -> None:
        self.image_pubs[name].publish(rgb_to_image_msg(image, self._stamp(sim_time), self.frame_ids[name]))

    def _publish_clock(self, sim_time: float) -> None:
        self.clock_pub.publish(Clock(clock=self._stamp(sim_time)))

    def _diagnostics(self, stamp, state: SimSnapshot) -> DiagnosticArray:
        stats = self.runtime.stats
        level = DiagnosticStatus.OK
        message = "simulating"
        if stats.last_error or self.commands.last_rejection:
            level = DiagnosticStatus.WARN
            message = f"last problem: {stats.last_error or self.commands.last_rejection}"
        arm_values = {
            "torque_enabled": str(state.torque_enabled),
            "sim_time": f"{state.time:.3f}",
            "realtime_factor_target": f"{self.runtime.realtime_factor:.2f}",
            "realtime_factor_achieved": f"{stats.achieved_realtime_factor:.2f}",
            "lag_resets": str(stats.lag_resets),
            "accepted_commands": str(self.commands.accepted),
            "rejected_commands": str(self.commands.rejected),
            "rejections_by_cause": self.rejections.summary(),
            "last_rejection": self.commands.last_rejection,
            "callback_errors": str(stats.callback_errors),
            "cube_position": np.array2string(self.arm.cube_position(), precision=3),
        }
        statuses = [self._status("arm: simulation", level, message, arm_values)]
        task = self.task.summary(state.time)
        task_message = "success" if task["success"] == "True" else "cube not lifted yet"
        statuses.append(self._status("arm: task", DiagnosticStatus.OK, task_message, task))
        for name, stream in stats.cameras.items():
            s = stream.stats
            values = {
                "frames": str(s.frames),
                "skipped_frames": str(s.skipped),
                "render_ms": f"{s.render_seconds * 1e3:.1f}",
                "target_fps": f"{1.0 / stream.period:.1f}",
                "topic": self.image_pubs[name].topic_name,
            }
            cam_level = DiagnosticStatus.ERROR if s.error else DiagnosticStatus.OK
            statuses.append(self._status(f"arm: camera {name}", cam_level, s.error or "rendering", values))
        array = DiagnosticArray(status=statuses)
        array.header.stamp = stamp
        return array

    @staticmethod
    def _status(name: str, level: bytes, message: str, values: dict[str, str]) -> DiagnosticStatus:
        return DiagnosticStatus(
            level=level,
            name=name,
            message=message,
            hardware_id="mujoco",
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )

    def destroy_node(self) -> None:
        if self.runtime is not None:
            self.runtime.stop()
        super().destroy_node()


def main(args=None) -> int:
    return run_node(SimArmNode, "sim_node", args, startup_errors=(ParameterError, RenderError))


if __name__ == "__main__":
    sys.exit(main())
