"""A scripted expert for the pick-up task (ROS-free): inverse kinematics on the simulated SO-101 model.

It knows the true cube pose and plans joint targets over time like a leader arm would send them: open the
jaws above the cube, go down around it, close, lift and hold. Positions come from damped least squares on
MuJoCo's Jacobians of the same ``so101_new_calib.xml`` the simulation runs (whose frames match the URDF,
``smolvla_bringup/test/test_kinematics.py``): the point between the fingertip pads goes to the goal with
the gripper pointing straight down and the jaws closing across two faces of the cube.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

from so100_driver.sim.arm import SimArm
from so100_driver.sim.scene import JOINT_NAMES
from so100_driver.sim.task import Placement, monitor_for, reset_episode

ARM_JOINTS = 5  # the joints that place the gripper; the sixth is the gripper itself
PADS = ("fixed_jaw_pad", "moving_jaw_pad")
TOOL_SITE = "gripperframe"
PARALLEL_JAW = 0.46  # rad: the gripper angle at which the pads are parallel, 40 mm apart
OPEN, CLOSED = 0.9, 0.0  # gripper targets (rad); closing stops on the cube, max_step sets the squeeze
HOME = np.array([0.0, -0.5, 0.5, 1.0, 0.0, OPEN])


@dataclass(frozen=True)
class ExpertTiming:
    """Seconds of each phase; the hold must outlast the task's 1 s success test."""

    approach: float = 2.0
    descend: float = 1.5
    close: float = 1.0
    lift: float = 1.5
    hold: float = 2.0
    above: float = 0.08  # m above the cube before going down
    lift_height: float = 0.10  # m the cube is lifted


class GraspIK:
    """Joint positions putting the point between the pads at a goal, gripper down, jaws at an angle."""

    def __init__(self, model: mujoco.MjModel):
        self.model = model
        self.data = mujoco.MjData(model)
        self._site = model.site(TOOL_SITE).id
        self._body = int(model.site_bodyid[self._site])
        self._arm = np.array([model.joint(n).dofadr[0] for n in JOINT_NAMES[:ARM_JOINTS]])
        self._qpos = np.array([model.joint(n).qposadr[0] for n in JOINT_NAMES])
        self._range = np.array([model.joint(n).range for n in JOINT_NAMES[:ARM_JOINTS]])
        self._offset = self._pad_centre_offset()

    def _pad_centre_offset(self) -> np.ndarray:
        """The point between the pads in the tool site's frame, with the jaws parallel."""
        self.data.qpos[self._qpos[-1]] = PARALLEL_JAW
        mujoco.mj_kinematics(self.model, self.data)
        centre = np.mean([self.data.geom_xpos[self.model.geom(n).id] for n in PADS], axis=0)
        rotation = self.data.site_xmat[self._site].reshape(3, 3)
        return rotation.T @ (centre - self.data.site_xpos[self._site])

    def _pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.data.qpos[self._qpos[:ARM_JOINTS]] = q[:ARM_JOINTS]
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)
        rotation = self.data.site_xmat[self._site].reshape(3, 3)
        return self.data.site_xpos[self._site] + rotation @ self._offset, rotation

    def solve(self, goal, jaw_angle: float, start, iterations: int = 200) -> tuple[np.ndarray, float]:
        """(joints, position error in m): pad centre at ``goal``, jaws closing along ``jaw_angle`` (rad)."""
        q = np.asarray(start, dtype=float).copy()
        goal = np.asarray(goal, dtype=float)
        jac_pos, jac_rot = np.zeros((3, self.model.nv)), np.zeros((3, self.model.nv))
        for _ in range(iterations):
            point, rotation = self._pose(q)
            approach, jaw = rotation[:, 0], rotation[:, 2]
            jaw_goal = np.array([math.cos(jaw_angle), math.sin(jaw_angle), 0.0])
            jaw_goal *= 1.0 if jaw @ jaw_goal >= 0 else -1.0  # either way round closes on the same faces
            turn = 0.5 * (np.cross(approach, [0.0, 0.0, -1.0]) + np.cross(jaw, jaw_goal))
            mujoco.mj_jac(self.model, self.data, jac_pos, jac_rot, point, self._body)
            jac = np.vstack([jac_pos[:, self._arm], 0.3 * jac_rot[:, self._arm]])
            error = np.concatenate([goal - point, 0.3 * turn])
            q[:ARM_JOINTS] += jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(6), error)
            q[:ARM_JOINTS] = np.clip(q[:ARM_JOINTS], self._range[:, 0], self._range[:, 1])
        point, _ = self._pose(q)
        return q, float(np.linalg.norm(goal - point))


@dataclass(frozen=True)
class ExpertPlan:
    """Joint targets (rad, ``JOINT_NAMES`` order) at times (s from the episode start), linearly joined."""

    times: np.ndarray  # (K,)
    targets: np.ndarray  # (K, 6)

    @property
    def duration(self) -> float:
        return float(self.times[-1])

    def target(self, t: float) -> np.ndarray:
        return np.array([np.interp(t, self.times, self.targets[:, j]) for j in range(self.targets.shape[1])])


def _grasp_angles(yaw: float) -> list[float]:
    """The two directions across the cube's faces (the jaws may close along either)."""
    return [yaw, yaw + math.pi / 2]


def plan_pick(
    ik: GraspIK, placement: Placement, cube_centre_z: float, start=None, timing: ExpertTiming | None = None
) -> ExpertPlan:
    """Targets from ``start`` (default :data:`HOME`) to the cube at ``placement``, grasp, lift and hold."""
    timing = timing or ExpertTiming()
    start = HOME.copy() if start is None else np.asarray(start, dtype=float)
    at_point = np.array([placement.x, placement.y, cube_centre_z])
    best = None
    for angle in _grasp_angles(placement.yaw):
        above, above_error = ik.solve(at_point + np.array([0, 0, timing.above]), angle, HOME)
        at, at_error = ik.solve(at_point, angle, above)
        lifted, lift_error = ik.solve(at_point + np.array([0, 0, timing.lift_height]), angle, at)
        cost = above_error + at_error + lift_error + 0.01 * abs(at[4])  # prefer less wrist roll
        if best is None or cost < best[0]:
            best = (cost, above, at, lifted)
    _, above, at, lifted = best
    above[5] = at[5] = OPEN
    closed, lifted = at.copy(), lifted.copy()
    closed[5] = lifted[5] = CLOSED
    phases = [
        (0.0, start),
        (timing.approach, above),
        (timing.descend, at),
        (timing.close, closed),
        (timing.lift, lifted),
        (timing.hold, lifted),
    ]
    times = np.cumsum([duration for duration, _ in phases])
    return ExpertPlan(times, np.array([q for _, q in phases]))


def plan_takeover(ik: GraspIK, arm: SimArm, timing: ExpertTiming | None = None) -> ExpertPlan:
    """The pick from where the arm and the cube are now: how the expert takes over a failed attempt (it
    opens while rising above the cube, then grasps again)."""
    cube = arm.cube_position()
    here = Placement(float(cube[0]), float(cube[1]), arm.cube_yaw())
    return plan_pick(ik, here, float(cube[2]), start=arm.state().position, timing=timing)


@dataclass(frozen=True)
class EpisodeResult:
    placement: Placement
    success: bool
    highest_lift: float  # m, the cube's highest rise above its resting height


def run_episode(
    model: mujoco.MjModel, placement: Placement, ik: GraspIK | None = None, aim: Placement | None = None
) -> EpisodeResult:
    """One episode straight on the physics (no ROS, no rendering): the expert's plan on a fresh arm.
    ``aim`` is where the plan picks (default: where the cube is; one fixed place for every episode is a
    policy that ignores the cameras)."""
    arm = SimArm(model, initial_positions=HOME)
    reset_episode(arm, placement)
    monitor = monitor_for(arm)
    plan = plan_pick(ik or GraspIK(model), aim or placement, float(arm.cube_position()[2]))
    while arm.time < plan.duration:
        arm.control_step(plan.target(arm.time))
        monitor.update(arm.time, arm.cube_position())
    return EpisodeResult(placement, monitor.success, monitor.highest)
