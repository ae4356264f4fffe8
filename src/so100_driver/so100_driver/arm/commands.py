"""Joint commands: validation, piecewise-linear trajectories and the targets an arm holds."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping, Sequence

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")

#: why a command without a stamp is rejected (every stamp is checked against the last torque-on)
UNSTAMPED = (
    "header.stamp is not set: stamp every command with the time it was issued "
    '(ros2 topic pub: "{header: {stamp: now}, joint_names: [...], points: [...]}")'
)


class CommandError(ValueError):
    """A joint command was rejected; the message says what was wrong and what is expected."""


class TrajectoryPlan:
    """Piecewise-linear trajectory over a subset of joints, starting from the targets at reception."""

    def __init__(
        self,
        start_time: float,
        joints: Sequence[str],
        times: Sequence[float],
        points: Sequence[Sequence[float]],
    ):
        self.start_time = start_time
        self.joints = list(joints)
        self.times = list(times)
        self.points = [list(p) for p in points]

    @property
    def end_time(self) -> float:
        return self.start_time + self.times[-1]

    def sample(self, now: float) -> dict[str, float]:
        t = now - self.start_time
        times, points = self.times, self.points
        if t <= times[0]:
            values = points[0]
        elif t >= times[-1]:
            values = points[-1]
        else:
            k = next(i for i in range(1, len(times)) if times[i] >= t)
            span = times[k] - times[k - 1]
            a = (t - times[k - 1]) / span if span > 0 else 1.0
            values = [p0 + a * (p1 - p0) for p0, p1 in zip(points[k - 1], points[k], strict=True)]
        return dict(zip(self.joints, values, strict=True))


def validate_command(
    joints: Mapping[str, object], names: Sequence[str], points: Sequence[tuple[float, Sequence[float]]]
) -> None:
    """Raise :class:`CommandError` unless the command is well formed (names, sizes, finite numbers, times)."""
    if not names:
        raise CommandError("joint_names is empty; expected some of: " + ", ".join(joints))
    unknown = [n for n in names if n not in joints]
    if unknown:
        raise CommandError(f"unknown joint name(s) {unknown}; this arm has: {', '.join(joints)}")
    if len(set(names)) != len(names):
        raise CommandError(f"duplicate joint names in {list(names)}")
    if not points:
        raise CommandError("the trajectory has no points")
    previous = -math.inf
    for index, (t, positions) in enumerate(points):
        if len(positions) != len(names):
            raise CommandError(
                f"point {index} has {len(positions)} positions for {len(names)} joint names ({list(names)})"
            )
        bad = [n for n, v in zip(names, positions, strict=True) if not math.isfinite(v)]
        if bad:
            raise CommandError(f"point {index} has non-finite positions (NaN/inf) for {bad}")
        if not math.isfinite(t) or t < 0.0:
            raise CommandError(f"point {index} has time_from_start {t}; expected a finite value >= 0")
        if t < previous:
            raise CommandError(
                f"point {index}: time_from_start {t} s goes back in time (previous {previous} s)"
            )
        previous = t


class JointTargets:
    """What an arm is asked to hold: a target per joint, plus at most one trajectory over some joints.

    One set of command rules for the real follower and the simulated arm: a command is validated
    (:func:`validate_command`), refused while the arm is not enabled, and refused when stamped before the
    latest torque-on (``enabled_since``): after an interruption the arm moves only on newer commands. A
    trajectory starts at its stamp from the targets held then and holds its last point.
    """

    def __init__(self, joint_names: Sequence[str], targets: Mapping[str, float] | None = None) -> None:
        self.joint_names = list(joint_names)
        self.targets: dict[str, float] = dict(targets or dict.fromkeys(self.joint_names, 0.0))
        self.plan: TrajectoryPlan | None = None
        self.enabled_since: float | None = None  # latest torque-on: older commands are refused
        self.accepted = 0
        self.rejected = 0
        self.last_rejection = ""

    def reject(self, reason: str) -> None:
        """Count a command refused before it reached :meth:`command` and raise :class:`CommandError`."""
        self.rejected += 1
        self.last_rejection = reason
        raise CommandError(reason)

    def command(
        self,
        now: float,
        names: Sequence[str],
        points: Sequence[tuple[float, Sequence[float]]],
        start_time: float | None = None,
        not_enabled: str = "",
    ) -> None:
        """Replace the plan by this trajectory (times from ``start_time``, its stamp; default ``now``);
        raises :class:`CommandError` and keeps the old plan when it is refused. ``not_enabled`` says why
        the arm cannot move now (empty: it can)."""
        try:
            validate_command(self.targets, names, points)
            if not_enabled:
                raise CommandError(not_enabled)
            since = self.enabled_since
            if start_time is not None and since is not None and start_time < since:
                raise CommandError(
                    f"command stamped {since - start_time:.3f} s before torque was last "
                    "enabled: ignored (after an interruption the arm moves only on newer commands)"
                )
        except CommandError as exc:
            self.reject(str(exc))
        current = self.sample(now)
        start = now if start_time is None else start_time
        times = [0.0] + [t for t, _ in points]
        values = [[current[n] for n in names]] + [list(p) for _, p in points]
        self.targets = current
        self.plan = TrajectoryPlan(start, names, times, values)
        self.accepted += 1

    def sample(self, now: float) -> dict[str, float]:
        """Every joint's target at ``now``: the trajectory where it runs, the held target elsewhere."""
        targets = dict(self.targets)
        if self.plan is not None:
            targets |= self.plan.sample(now)
        return targets

    def settle(self, now: float) -> None:
        """Once the trajectory has run out, hold its last point and forget it."""
        if self.plan is not None and now >= self.plan.end_time:
            self.targets = self.sample(now)
            self.plan = None

    def hold(self, positions: Mapping[str, float], enabled_since: float | None = None) -> None:
        """Drop the trajectory and hold ``positions``; a torque-on at ``enabled_since`` refuses every
        command stamped before it from then on."""
        self.plan = None
        self.targets |= {n: float(v) for n, v in positions.items()}
        if enabled_since is not None:
            self.enabled_since = enabled_since

    def hold_joint(self, name: str, position: float) -> None:
        """Take one joint out of the trajectory and hold it at ``position`` (a backed-off joint)."""
        self.targets[name] = float(position)
        plan = self.plan
        if plan is None or name not in plan.joints:
            return
        if len(plan.joints) == 1:
            self.plan = None
            return
        index = plan.joints.index(name)
        plan.joints.pop(index)
        for point in plan.points:
            point.pop(index)


class RejectionLog:
    """Which rejected commands to log: the first of each cause, the rest only counted (a sender that keeps
    sending to an arm that cannot move would otherwise fill the log). The cause is the reason with its
    numbers left out; :meth:`new_episode` (torque on or off, a fault) logs each cause once more.
    Thread-safe: commands arrive on the executor thread, state changes on the control thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self._logged: set[str] = set()

    @staticmethod
    def cause(reason: str) -> str:
        return _NUMBER.sub("#", reason)

    def first(self, reason: str) -> bool:
        """Count a rejection; True when its cause was not logged yet in this episode (log it now)."""
        cause = self.cause(reason)
        with self._lock:
            self.counts[cause] = self.counts.get(cause, 0) + 1
            if cause in self._logged:
                return False
            self._logged.add(cause)
            return True

    def new_episode(self) -> None:
        with self._lock:
            self._logged.clear()

    def summary(self, limit: int = 5) -> str:
        """E.g. ``120x arm is idle: enable torque first ...; 2x unknown joint name(s) [...]``."""
        with self._lock:
            ranked = sorted(self.counts.items(), key=lambda item: -item[1])
        return "; ".join(f"{count}x {cause[:120]}" for cause, count in ranked[:limit])
