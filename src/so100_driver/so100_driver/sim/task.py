"""The pick-up task of the simulated scene (ROS-free): seeded cube placements and a success test.

Each episode puts the cube at rest at a random place of a rectangle of the table, turned by a random yaw,
drawn from a generator seeded once (``task_seed``), so episode ``k`` of a seed is always the same.

Success is read from the simulator state only: the cube's centre at least ``lift_height`` (3 cm) above its
resting height, without a break, for ``hold_s`` (1 s) of simulated time. It is reliable because nothing but
a grasp can do it: pushing or dragging keeps the cube on the table, tipping it onto an edge raises the
centre by at most 0.21 of its edge (6 mm for the 3 cm cube), and a cube flung by a collision falls back
within a fraction of the hold time. A "gripper touches the cube" test would also pass a nudge.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np

from so100_driver.sim.arm import SimArm
from so100_driver.sim.scene import TABLE_TOP_Z

#: Task seeds from here on are held out for scoring (``make bench-closed-loop``); training data
#: (``record_expert``) is recorded with seeds below it, so no scored placement was seen in training.
HELD_OUT_SEEDS_FROM = 1000


@dataclass(frozen=True)
class Placement:
    """Where the cube starts an episode: metres in the arm's base frame, yaw in rad."""

    x: float
    y: float
    yaw: float


@dataclass(frozen=True)
class TaskRegion:
    """The rectangle of the table the cube is placed in, and the largest yaw (± rad)."""

    x_range: tuple[float, float] = (0.18, 0.30)
    y_range: tuple[float, float] = (-0.10, 0.12)
    max_yaw: float = math.pi / 4

    def __post_init__(self) -> None:
        for name, (low, high) in (("x_range", self.x_range), ("y_range", self.y_range)):
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"{name} must be two finite numbers [low, high] with low <= high")
        if not 0.0 <= self.max_yaw <= math.pi:
            raise ValueError(f"max_yaw must be in [0, pi] rad, got {self.max_yaw}")

    @classmethod
    def from_list(cls, bounds, max_yaw: float) -> TaskRegion:
        """``[x_min, x_max, y_min, y_max]`` (m) and ``max_yaw`` (rad)."""
        values = [float(v) for v in bounds]
        if len(values) != 4:
            raise ValueError(f"the region needs [x_min, x_max, y_min, y_max], got {list(bounds)}")
        return cls((values[0], values[1]), (values[2], values[3]), float(max_yaw))


class PlacementSampler:
    """Episode ``k`` of a seed always gets the same placement (one generator, drawn in order)."""

    def __init__(self, seed: int, region: TaskRegion | None = None):
        self.region = region or TaskRegion()
        self._rng = np.random.default_rng(seed)
        self.episode = 0

    def next(self) -> Placement:
        r = self.region
        x, y, yaw = self._rng.uniform(
            [r.x_range[0], r.y_range[0], -r.max_yaw], [r.x_range[1], r.y_range[1], r.max_yaw]
        )
        self.episode += 1
        return Placement(float(x), float(y), float(yaw))


def placements(seed: int, count: int, region: TaskRegion | None = None) -> list[Placement]:
    sampler = PlacementSampler(seed, region)
    return [sampler.next() for _ in range(count)]


def reset_episode(arm: SimArm, placement: Placement) -> None:
    """Put the cube at rest at ``placement`` (the arm is not moved: it moves only when commanded)."""
    arm.place_cube(placement.x, placement.y, placement.yaw)


@dataclass
class SuccessMonitor:
    """Feed it the cube position at increasing simulated times; ``success`` once lifted long enough."""

    cube_half_height: float
    lift_height: float = 0.03
    hold_s: float = 1.0
    lifted_since: float | None = None
    success: bool = False
    highest: float = field(default=-math.inf)  # highest cube lift seen this episode, m

    def reset(self) -> None:
        self.lifted_since, self.success, self.highest = None, False, -math.inf

    def lift(self, cube_position) -> float:
        """How far the cube's centre is above its resting height (m)."""
        return float(cube_position[2]) - (TABLE_TOP_Z + self.cube_half_height)

    def update(self, sim_time: float, cube_position) -> bool:
        lift = self.lift(cube_position)
        self.highest = max(self.highest, lift)
        if lift < self.lift_height:
            self.lifted_since = None
        elif self.lifted_since is None:
            self.lifted_since = sim_time
        if self.lifted_since is not None and sim_time - self.lifted_since >= self.hold_s - 1e-9:
            self.success = True  # stays true for the episode, also when the cube is put down again
        return self.success

    def held_for(self, sim_time: float) -> float:
        return 0.0 if self.lifted_since is None else sim_time - self.lifted_since


def monitor_for(arm: SimArm, lift_height: float = 0.03, hold_s: float = 1.0) -> SuccessMonitor:
    return SuccessMonitor(float(arm.model.geom("cube").size[2]), lift_height, hold_s)


class EpisodeTask:
    """Episodes of the task on one arm: what the sim node wires to its service, topic and diagnostics.

    Thread-safe: the physics thread calls :meth:`update`, the node's executor thread :meth:`reset`.
    """

    def __init__(
        self, arm: SimArm, sampler: PlacementSampler, lift_height: float = 0.03, hold_s: float = 1.0
    ):
        self.arm = arm
        self.sampler = sampler
        self.monitor = monitor_for(arm, lift_height, hold_s)
        self.placement: Placement | None = None
        self.episode = 0  # episodes started so far
        self._lock = threading.Lock()

    def reset(self, placement: Placement | None = None) -> Placement:
        """Start the next episode: the next seeded placement (or ``placement``), success cleared."""
        placement = placement or self.sampler.next()
        with self._lock:
            reset_episode(self.arm, placement)
            self.monitor.reset()
            self.placement = placement
            self.episode += 1
        return placement

    def update(self, sim_time: float) -> bool | None:
        """Feed the cube's position; returns the new success value when it changed, else None."""
        with self._lock:
            before = self.monitor.success
            now = self.monitor.update(sim_time, self.arm.cube_position())
        return now if now != before else None

    def summary(self, sim_time: float) -> dict[str, str]:
        with self._lock:
            monitor, p = self.monitor, self.placement
            return {
                "episode": str(self.episode),
                "placement": "" if p is None else f"x={p.x:.3f} y={p.y:.3f} yaw={p.yaw:.3f}",
                "lift_m": f"{monitor.lift(self.arm.cube_position()):.3f}",
                "held_s": f"{monitor.held_for(sim_time):.2f}",
                "success": str(monitor.success),
            }
