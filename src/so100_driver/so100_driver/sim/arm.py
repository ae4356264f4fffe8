"""Physics of the simulated SO-101: position servos with the real node's safety rules (ROS-free).

Every control tick (the "bus cycle") each goal moves towards the request by the real arm's rule
(:func:`so100_driver.arm.safety.next_goal`: at most ``max_velocity`` per second, never farther than
``max_step`` from the measured position, never outside the joint range), then physics runs for one
control period. Torque off disables the actuators (the arm sags under gravity like an unpowered arm);
torque on holds the present position, as on the real servos.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import mujoco
import numpy as np

from so100_driver.arm.safety import next_goal
from so100_driver.sim.scene import CUBE_BODY, JOINT_NAMES, TABLE_TOP_Z


@dataclass(frozen=True)
class SimSnapshot:
    """A consistent snapshot of the simulation at ``time`` (seconds of simulated time)."""

    time: float
    position: np.ndarray  # rad, JOINT_NAMES order
    velocity: np.ndarray  # rad/s
    effort: np.ndarray  # N·m (actuator torque)
    goal: np.ndarray  # rad, the goal the servos are driven to
    qpos: np.ndarray  # the full MuJoCo state vector, for rendering
    torque_enabled: bool


class SimArm:
    def __init__(
        self,
        model: mujoco.MjModel,
        initial_positions: np.ndarray | None = None,
        control_period: float = 0.01,
        max_step: float = 0.1,
        max_velocity: float = 3.0,
    ):
        if not control_period > 0.0:
            raise ValueError(f"control_period must be > 0, got {control_period}")
        if not max_step > 0.0:
            raise ValueError(f"max_step must be > 0 rad, got {max_step}")
        if not max_velocity > 0.0:
            raise ValueError(f"max_velocity must be > 0 rad/s, got {max_velocity}")
        self.model = model
        self.data = mujoco.MjData(model)
        self.joint_names = JOINT_NAMES
        joints = [model.joint(name) for name in JOINT_NAMES]
        self._qpos_index = np.array([joint.qposadr[0] for joint in joints])
        self._qvel_index = np.array([joint.dofadr[0] for joint in joints])
        self._actuators = np.array([model.actuator(name).id for name in JOINT_NAMES])
        self.lower = np.array([joint.range[0] for joint in joints])
        self.upper = np.array([joint.range[1] for joint in joints])
        self.max_step = float(max_step)
        self.substeps = max(1, round(control_period / model.opt.timestep))
        self.control_period = self.substeps * model.opt.timestep
        self.step_per_cycle = float(max_velocity) * self.control_period
        self._lock = threading.Lock()
        self._torque_enabled = True
        start = np.zeros(len(JOINT_NAMES)) if initial_positions is None else self._checked(initial_positions)
        start = np.clip(start, self.lower, self.upper)
        self.data.qpos[self._qpos_index] = start
        self.data.ctrl[self._actuators] = start
        self._goal = start.copy()
        mujoco.mj_forward(model, self.data)

    def _checked(self, positions) -> np.ndarray:
        values = np.asarray(positions, dtype=float).reshape(-1)
        if values.shape != (len(JOINT_NAMES),) or not np.all(np.isfinite(values)):
            raise ValueError(
                f"expected {len(JOINT_NAMES)} finite joint positions (rad) {JOINT_NAMES}, got {values}"
            )
        return values

    @property
    def time(self) -> float:
        return float(self.data.time)

    @property
    def goal(self) -> np.ndarray:
        with self._lock:
            return self._goal.copy()

    @property
    def torque_enabled(self) -> bool:
        return self._torque_enabled

    def set_torque(self, enabled: bool) -> None:
        with self._lock:
            if enabled and not self._torque_enabled:
                self._goal = self.data.qpos[self._qpos_index].copy()
                self.data.ctrl[self._actuators] = self._goal
            self._torque_enabled = enabled
            if enabled:
                self.model.opt.disableflags &= ~int(mujoco.mjtDisableBit.mjDSBL_ACTUATION)
            else:
                self.model.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_ACTUATION)

    def control_step(self, requested: np.ndarray | None) -> None:
        """One bus cycle: move the goal towards ``requested`` (None = hold), then simulate one period."""
        with self._lock:
            if not self._torque_enabled:
                self._goal = self.data.qpos[self._qpos_index].copy()
            elif requested is not None:
                target = self._checked(requested)
                measured = self.data.qpos[self._qpos_index]
                for j in range(len(JOINT_NAMES)):
                    goal = next_goal(
                        self._goal[j],
                        target[j],
                        measured[j],
                        self.lower[j],
                        self.upper[j],
                        self.step_per_cycle,
                        self.max_step,
                    )
                    if goal is not None:
                        self._goal[j] = goal
                self.data.ctrl[self._actuators] = self._goal
            mujoco.mj_step(self.model, self.data, nstep=self.substeps)

    def state(self) -> SimSnapshot:
        with self._lock:
            data = self.data
            return SimSnapshot(
                time=float(data.time),
                position=data.qpos[self._qpos_index].copy(),
                velocity=data.qvel[self._qvel_index].copy(),
                effort=data.actuator_force[self._actuators].copy(),
                goal=self._goal.copy(),
                qpos=data.qpos.copy(),
                torque_enabled=self._torque_enabled,
            )

    def cube_position(self) -> np.ndarray:
        with self._lock:
            return self.data.body(CUBE_BODY).xpos.copy()

    def cube_yaw(self) -> float:
        """The cube's rotation about the vertical (rad), from its orientation quaternion."""
        with self._lock:
            w, x, y, z = self.data.body(CUBE_BODY).xquat
        return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))

    def site_position(self, name: str) -> np.ndarray:
        """World position (m) of a site of the model, e.g. the gripper's ``gripperframe``."""
        with self._lock:
            return self.data.site(name).xpos.copy()

    def place_cube(self, x: float, y: float, yaw: float = 0.0) -> None:
        """Put the cube at rest on the table at ``(x, y)`` (m, base frame), turned by ``yaw`` (rad)."""
        if not all(np.isfinite([x, y, yaw])):
            raise ValueError(f"cube pose must be finite, got x={x}, y={y}, yaw={yaw}")
        joint = self.model.joint(CUBE_BODY)
        half_height = float(self.model.geom(CUBE_BODY).size[2])
        with self._lock:
            qpos, dof = joint.qposadr[0], joint.dofadr[0]
            self.data.qpos[qpos : qpos + 7] = [
                x,
                y,
                TABLE_TOP_Z + half_height,
                np.cos(yaw / 2),
                0,
                0,
                np.sin(yaw / 2),
            ]
            self.data.qvel[dof : dof + 6] = 0.0
            mujoco.mj_forward(self.model, self.data)
