"""The joint plan of the simulated arm, with the real arm node's trajectory rules (ROS-free).

Validation and interpolation are those of :mod:`so100_driver.arm_controller` (the same functions the
real node uses): a trajectory starts at its header stamp (or on arrival) from the targets held then,
is interpolated linearly through its points by ``time_from_start``, and holds its last point. Joints it
does not name keep their targets. A trajectory stamped before the latest torque-on is refused. Times are
seconds of the node's clock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from so100_driver.arm_controller import CommandError, TrajectoryPlan, validate_command

__all__ = ["CommandError", "JointCommands"]


class JointCommands:
    def __init__(self, joint_names: Sequence[str], initial_targets: np.ndarray):
        self.joint_names = list(joint_names)
        self._index = {name: i for i, name in enumerate(self.joint_names)}
        self._targets = np.asarray(initial_targets, dtype=float).copy()
        self._plan: TrajectoryPlan | None = None
        self._lock = threading.Lock()
        self.accepted = 0
        self.rejected = 0
        self.last_rejection = ""
        self.enabled_since: float | None = None  # latest torque-on: older commands are refused

    def reject(self, reason: str) -> None:
        """Count a command refused before :meth:`command` and raise :class:`CommandError`."""
        with self._lock:
            self.rejected += 1
            self.last_rejection = reason
        raise CommandError(reason)

    def command(
        self,
        now: float,
        names: Sequence[str],
        points: Sequence[tuple[float, Sequence[float]]],
        start_time: float | None = None,
        enabled: bool = True,
    ) -> None:
        """Replace the plan; raises :class:`CommandError` (and keeps the old plan) if it is invalid."""
        with self._lock:
            try:
                validate_command(self._index, names, points)
                if not enabled:
                    raise CommandError(
                        "arm is disabled: enable torque first (std_srvs/SetBool on the torque service)"
                    )
                since = self.enabled_since
                if start_time is not None and since is not None and start_time < since:
                    raise CommandError(
                        f"command stamped {since - start_time:.3f} s before torque was last "
                        "enabled: ignored (after an interruption the arm moves only on newer commands)"
                    )
            except CommandError as error:
                self.rejected += 1
                self.last_rejection = str(error)
                raise
            current = self._sample(now)
            start = now if start_time is None else start_time
            times = [0.0] + [float(t) for t, _ in points]
            values = [[current[self._index[n]] for n in names]] + [[float(v) for v in p] for _, p in points]
            self._targets = current
            self._plan = TrajectoryPlan(start, names, times, values)
            self.accepted += 1

    def hold(self, positions: np.ndarray, enabled_since: float | None = None) -> None:
        """Drop the plan and hold ``positions`` (torque on starts from the present position); a torque-on
        at ``enabled_since`` refuses every command stamped before it from then on."""
        with self._lock:
            self._plan = None
            self._targets = np.asarray(positions, dtype=float).copy()
            if enabled_since is not None:
                self.enabled_since = enabled_since

    def sample(self, now: float) -> np.ndarray:
        """The requested joint positions at time ``now`` (all joints, ``joint_names`` order)."""
        with self._lock:
            return self._sample(now)

    def _sample(self, now: float) -> np.ndarray:
        targets = self._targets.copy()
        if self._plan is not None:
            for name, value in self._plan.sample(now).items():
                targets[self._index[name]] = value
        return targets
