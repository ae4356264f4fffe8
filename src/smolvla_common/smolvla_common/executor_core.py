"""Action-chunk executor logic: a time-indexed plan, chunk blending, request scheduling, safety envelope.

Pure numpy and ROS-free: the executor node turns messages into calls of :class:`ChunkExecutorCore` and
its results back into messages. Every time is a float in seconds on the node clock (ROS time, so
``use_sim_time`` works), except the tick-jitter meter, which takes a monotonic wall clock.

Time base (see the package README, section "Executor"):

* Action ``i`` of a chunk is meant for ``stamp + i * dt`` (``stamp`` = the stamp of the observation it was
  computed from). Each planned action owns the slot ``[t - dt/2, t + dt/2)``; at a tick at ``now`` the
  executor sends the action whose slot contains ``now``. Actions whose slot has ended are dropped. When no
  slot contains ``now`` the executor holds the last command (never extrapolates) and counts an idle tick.
* Latency compensation: while the old plan is still running, a new chunk's actions for times that have
  passed are dropped, so the robot continues where the new chunk says it should be now.
* Stall compensation: when the plan ran dry before the chunk arrived (or the robot held still since before
  the observation, as in sync mode or for the first chunk), the robot has been standing still, so the chunk
  resumes where the robot stopped: its action for the start of the hold is moved to the next tick and the
  rest follows at ``dt``. No motion is skipped, and the first action matches the held position.

Arm interruptions (see :meth:`ChunkExecutorCore.on_arm_status`): whenever the arm is not enabled, or is
enabled again (a new safety epoch: torque re-enabled, USB reconnect), the plan, the pending request and
the last command are dropped. Nothing is commanded until the arm is enabled and a joint state measured
after its latest torque-on arrives; motion then resumes from that measured pose, with chunks computed
from observations made after the torque-on only. In e-stop and pause nothing is commanded at all.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from smolvla_common.arm_status import ArmReport
from smolvla_common.chunk import Chunk, check_chunk
from smolvla_common.parameters import ParameterError, require

#: Blend rules: weight of the NEW chunk over the overlap (the first four are LeRobot's aggregate functions).
FIXED_NEW_WEIGHTS = {"latest_only": 1.0, "weighted_average": 0.7, "average": 0.5, "conservative": 0.3}
BLEND_RULES = (*FIXED_NEW_WEIGHTS, "crossfade")
MODES = ("async", "sync")


class State(IntEnum):
    """Executor states; values match ``smolvla_msgs/ExecutorStatus.STATE_*``."""

    STOPPED = 0
    RUNNING = 1
    PAUSED = 2
    HOLDING = 3
    ESTOP = 4


#: The durations of :class:`ExecutorConfig`, each a positive number of seconds.
DURATION_FIELDS = (
    "joint_state_timeout_s",
    "chunk_timeout_s",
    "request_timeout_s",
    "future_stamp_tolerance_s",
    "max_chunk_age_s",
    "expected_dt_s",
)
#: Read at every tick or chunk, so they can change while the executor runs; the others shape its state.
LIVE_FIELDS = frozenset({"mode", "threshold", "blend", "max_step_rad", *DURATION_FIELDS})


@dataclass
class ExecutorConfig:
    """Executor parameters (the node exposes each one as a ROS parameter of the same name). The ones in
    :data:`LIVE_FIELDS` may change while the executor runs (:meth:`ChunkExecutorCore.reconfigure`)."""

    joint_names: tuple[str, ...]
    rate_hz: float = 30.0
    mode: str = "async"
    threshold: float = 0.5
    blend: str = "weighted_average"
    max_step_rad: float = 0.1
    joint_min_rad: tuple[float, ...] = ()
    joint_max_rad: tuple[float, ...] = ()
    joint_state_timeout_s: float = 0.5
    chunk_timeout_s: float = 5.0
    request_timeout_s: float = 5.0
    future_stamp_tolerance_s: float = 0.2
    max_chunk_age_s: float = 0.0
    expected_dt_s: float = 0.0
    jitter_window: int = 1000

    def __post_init__(self) -> None:
        self.joint_names = tuple(str(n) for n in self.joint_names)
        n = len(self.joint_names)
        names = list(self.joint_names)
        require(n > 0 and len(set(names)) == n, "joint_names", "unique joint names, at least one", names)
        require(
            self.rate_hz > 0 and math.isfinite(self.rate_hz), "rate_hz", "a tick rate > 0 (Hz)", self.rate_hz
        )
        require(self.mode in MODES, "mode", f"one of {MODES}", self.mode)
        require(
            0.0 <= self.threshold <= 1.0, "threshold", "a fraction of the horizon in [0, 1]", self.threshold
        )
        require(self.blend in BLEND_RULES, "blend", f"one of {BLEND_RULES}", self.blend)
        require(self.max_step_rad > 0, "max_step_rad", "a step per tick > 0 (rad)", self.max_step_rad)
        self.joint_min_rad = tuple(float(v) for v in self.joint_min_rad) or (-math.pi,) * n
        self.joint_max_rad = tuple(float(v) for v in self.joint_max_rad) or (math.pi,) * n
        for name in ("joint_min_rad", "joint_max_rad"):
            values = list(getattr(self, name))
            require(len(values) == n, name, f"{n} values, one per joint in joint_names", values)
        for joint, lo, hi in zip(self.joint_names, self.joint_min_rad, self.joint_max_rad, strict=True):
            finite = math.isfinite(lo) and math.isfinite(hi)
            require(
                finite and lo < hi, "joint_min_rad", f"a finite limit below joint_max_rad for {joint!r}", lo
            )
        for name in DURATION_FIELDS:
            value = getattr(self, name)
            require(value >= 0 and math.isfinite(value), name, "a finite value >= 0 (0 disables)", value)
        require(self.jitter_window >= 2, "jitter_window", "at least 2 ticks", self.jitter_window)

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz


@dataclass(frozen=True)
class ChunkVerdict:
    """Outcome of :meth:`ChunkExecutorCore.on_chunk`: merged or dropped, and why."""

    accepted: bool
    reason: str
    boundary_jump: float = 0.0


@dataclass(frozen=True)
class RequestOrder:
    """A chunk request to publish now; pending actions are relative to the request time (for RTC)."""

    request_id: int
    must_go: bool
    pending_time_from_start: np.ndarray  # (K,) s
    pending_positions: np.ndarray  # (K, J) rad


@dataclass(frozen=True)
class TickResult:
    """What one tick decided. ``command`` is None when there is nothing to send (stopped, no joint state)."""

    command: np.ndarray | None
    executed: bool
    request: RequestOrder | None
    state: State
    message: str


@dataclass(frozen=True)
class ExecutorStats:
    """Counters and timings since start (mirrors ``ExecutorStatus`` plus a few diagnostics-only values)."""

    state: State
    mode: str
    message: str
    horizon_left_s: float
    actions_left: int
    executed_steps: int
    idle_ticks: int
    idle_ticks_before_first_chunk: int
    chunks_received: int
    chunks_dropped: int
    requests_sent: int
    request_timeouts: int
    limited_ticks: int
    last_boundary_jump: float
    max_boundary_jump: float
    last_observation_to_execution_s: float
    last_receipt_to_execution_s: float
    last_request_round_trip_s: float
    tick_jitter_p50_s: float
    tick_jitter_p99_s: float
    tick_jitter_max_s: float
    last_command: np.ndarray | None
    last_drop_reason: str


class JitterMeter:
    """|actual tick period - nominal period| over a sliding window, from monotonic tick times."""

    def __init__(self, period_s: float, window: int = 1000) -> None:
        self.period_s = period_s
        self._errors: deque[float] = deque(maxlen=window)
        self._last: float | None = None

    def reset(self) -> None:
        self._errors.clear()
        self._last = None

    def record(self, monotonic_s: float) -> None:
        if self._last is not None:
            self._errors.append(abs((monotonic_s - self._last) - self.period_s))
        self._last = monotonic_s

    def percentile(self, q: float) -> float:
        return float(np.percentile(np.fromiter(self._errors, float), q)) if self._errors else 0.0

    def maximum(self) -> float:
        return max(self._errors, default=0.0)

    def errors(self) -> np.ndarray:
        return np.fromiter(self._errors, float)


@dataclass
class _Plan:
    """Planned actions sorted by time; ``source`` is the chunk id each action (last) came from."""

    times: np.ndarray
    positions: np.ndarray
    source: np.ndarray
    dt: float = 0.0

    @classmethod
    def empty(cls, n_joints: int) -> _Plan:
        return cls(np.zeros(0), np.zeros((0, n_joints)), np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.times)

    def keep(self, mask: np.ndarray) -> None:
        self.times, self.positions, self.source = self.times[mask], self.positions[mask], self.source[mask]

    def value_at(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions at ``times`` (linear interpolation, clamped at the ends) and a mask of covered times."""
        half = self.dt / 2
        covered = (times >= self.times[0] - half) & (times < self.times[-1] + half)
        values = np.stack(
            [np.interp(times, self.times, self.positions[:, j]) for j in range(self.positions.shape[1])],
            axis=1,
        )
        return values, covered


@dataclass
class _Counters:
    executed_steps: int = 0
    idle_ticks: int = 0
    idle_ticks_before_first_chunk: int = 0
    chunks_received: int = 0
    chunks_dropped: int = 0
    requests_sent: int = 0
    request_timeouts: int = 0
    limited_ticks: int = 0
    last_boundary_jump: float = 0.0
    max_boundary_jump: float = 0.0
    last_observation_to_execution_s: float = 0.0
    last_receipt_to_execution_s: float = 0.0
    last_request_round_trip_s: float = 0.0
    first_chunk_seen: bool = False
    seen_ids: dict[int, float] = field(default_factory=dict)


class ChunkExecutorCore:
    """The executor's whole behaviour; not thread-safe (the node serialises calls with a lock).

    Call order: :meth:`on_joint_state` / :meth:`on_chunk` whenever messages arrive, :meth:`tick` at the
    tick rate, :meth:`start` / :meth:`stop` / :meth:`pause` / :meth:`resume` / :meth:`estop` from services,
    :meth:`stats` for status messages.
    """

    def __init__(self, config: ExecutorConfig, arm: ArmReport | None = None) -> None:
        self.config = config
        self._arm = arm  # None until the arm node said how it is: nothing is commanded before
        self._n = len(config.joint_names)
        self._lo = np.asarray(config.joint_min_rad, float)
        self._hi = np.asarray(config.joint_max_rad, float)
        self._index = {name: i for i, name in enumerate(config.joint_names)}
        self.jitter = JitterMeter(config.period_s, config.jitter_window)
        self._state = State.STOPPED
        self._plan = _Plan.empty(self._n)
        self._last_command: np.ndarray | None = None
        self._joint_state: np.ndarray | None = None
        self._joint_state_time: float | None = None
        self._last_chunk_time: float | None = None
        self._started_at: float = 0.0
        self._hold_since: float = 0.0
        self._paused_at: float = 0.0
        self._last_tick: float | None = None
        self._horizon_actions = 0
        self._next_request_id = 1
        self._outstanding: tuple[int, float] | None = None  # (request_id, sent time)
        self._awaiting_first_exec: tuple[int, float, float] | None = None  # (chunk id, stamp, receipt)
        self._message = "stopped: call the start service"
        self._last_drop_reason = ""
        self._holding = False
        self._c = _Counters()

    # ------------------------------------------------------------------ inputs

    def on_joint_state(
        self,
        now: float,
        names: list[str] | tuple[str, ...],
        positions: np.ndarray,
        stamp: float | None = None,
    ) -> str | None:
        """Record measured joint positions; returns an error text (message ignored) when unusable.

        A state measured (``stamp``) before the arm's latest torque-on is ignored silently: the arm may
        have moved since, and motion resumes from where it is now."""
        if stamp is not None and self._arm is not None and stamp < self._arm.enabled_since:
            return None
        positions = np.asarray(positions, float)
        if len(names) != len(positions):
            return f"joint state has {len(names)} names but {len(positions)} positions"
        lookup = dict(zip(names, positions, strict=True))
        missing = [j for j in self.config.joint_names if j not in lookup]
        if missing:
            return f"joint state lacks joints {missing} (expected {list(self.config.joint_names)})"
        values = np.array([lookup[j] for j in self.config.joint_names])
        if not np.all(np.isfinite(values)):
            bad = [j for j, v in zip(self.config.joint_names, values, strict=True) if not math.isfinite(v)]
            return f"joint state has non-finite positions for {bad}: ignored"
        self._joint_state, self._joint_state_time = values, now
        return None

    def on_chunk(self, now: float, chunk: Chunk) -> ChunkVerdict:
        """Validate and merge a chunk into the plan; a dropped chunk is counted and explained."""
        self._c.chunks_received += 1
        self._expire(now)
        if self._outstanding is not None and chunk.request_id == self._outstanding[0]:
            self._c.last_request_round_trip_s = now - self._outstanding[1]
            self._outstanding = None
        try:
            positions = self._validate(now, chunk)
        except _RejectError as reject:
            self._c.chunks_dropped += 1
            self._last_drop_reason = f"chunk {chunk.chunk_id} dropped: {reject}"
            self._message = self._last_drop_reason
            return ChunkVerdict(False, str(reject))
        self._c.seen_ids[chunk.chunk_id] = chunk.stamp
        if len(self._c.seen_ids) > 256:
            self._c.seen_ids.pop(next(iter(self._c.seen_ids)))
        jump = self._merge(now, chunk, positions)
        self._c.first_chunk_seen = True
        self._last_chunk_time = now
        self._horizon_actions = max(self._horizon_actions, len(chunk.time_from_start))
        self._awaiting_first_exec = (chunk.chunk_id, chunk.stamp, now)
        self._c.last_boundary_jump = jump
        self._c.max_boundary_jump = max(self._c.max_boundary_jump, jump)
        return ChunkVerdict(True, f"chunk {chunk.chunk_id} merged ({self.config.blend})", jump)

    def on_arm_status(self, now: float, arm: ArmReport) -> str | None:
        """Follow the arm's state; returns a line to log when it interrupted the executor's plan."""
        previous, self._arm = self._arm, arm
        if not arm.enabled:
            if previous is None or previous.enabled:
                return self._interrupt(now, f"arm not enabled: {arm.message}")
            return None
        new_epoch = previous is None or (previous.epoch, previous.enabled_since) != (
            arm.epoch,
            arm.enabled_since,
        )
        if new_epoch or not previous.enabled:  # a restarted arm node counts epochs from 1 again
            return self._interrupt(
                now,
                f"arm enabled (epoch {arm.epoch}): resuming from the measured pose, with chunks computed "
                "after the torque-on",
            )
        return None

    def _interrupt(self, now: float, reason: str) -> str:
        """Forget everything that was planned for the arm before an interruption."""
        self._plan = _Plan.empty(self._n)
        self._outstanding = None
        self._awaiting_first_exec = None
        self._last_command = None
        self._joint_state = self._joint_state_time = None
        self._last_chunk_time = None
        self._hold_since = now
        self._message = reason
        return reason

    @property
    def arm_ready(self) -> bool:
        return self._arm is not None and self._arm.enabled

    def drop(self, chunk_id: int, reason: str) -> str:
        """Count a chunk that could not even be decoded (e.g. ragged points) as dropped."""
        self._c.chunks_received += 1
        self._c.chunks_dropped += 1
        self._last_drop_reason = self._message = f"chunk {chunk_id} dropped: {reason}"
        return reason

    # ------------------------------------------------------------------ control

    def reconfigure(self, **changes: object) -> None:
        """Change fields of :data:`LIVE_FIELDS` while running (validated like at startup; ParameterError
        names the field). The plan and the state are kept; the next tick uses the new values."""
        fixed = sorted(set(changes) - LIVE_FIELDS)
        if fixed:
            raise ParameterError(
                f"parameter '{fixed[0]}' is read at startup only: restart the executor to change it"
            )
        self.config = dataclasses.replace(self.config, **changes)

    def start(self, now: float) -> tuple[bool, str]:
        """Start, resume from pause, or leave e-stop (torque is re-enabled on the arm, not here)."""
        if self._state == State.PAUSED:
            return self.resume(now)
        if self._state == State.RUNNING:
            return True, "already running"
        was_estop = self._state == State.ESTOP
        self._state = State.RUNNING
        self._plan = _Plan.empty(self._n)
        self._outstanding = None
        self._started_at = self._hold_since = now
        self._last_chunk_time = None
        self._last_tick = None
        self._last_command = None if self._joint_state is None else self._joint_state.copy()
        self.jitter.reset()
        self._message = "running" + (" (left e-stop: re-enable torque on the arm)" if was_estop else "")
        return True, self._message

    def stop(self, now: float) -> tuple[bool, str]:
        """Stop commanding and forget the plan."""
        self._state = State.STOPPED
        self._plan = _Plan.empty(self._n)
        self._outstanding = None
        self._message = "stopped"
        return True, self._message

    def pause(self, now: float) -> tuple[bool, str]:
        """Hold the last command and freeze the plan in time (resume shifts it by the pause length)."""
        if self._state == State.PAUSED:  # idempotent: a command sent again must not read as a failure
            return True, "already paused"
        if self._state != State.RUNNING:
            return False, f"cannot pause in state {self._state.name}"
        self._state, self._paused_at, self._outstanding = State.PAUSED, now, None
        self._message = "paused: holding the last command, plan kept"
        return True, self._message

    def resume(self, now: float) -> tuple[bool, str]:
        if self._state == State.RUNNING:
            return True, "already running"
        if self._state != State.PAUSED:
            return False, f"cannot resume in state {self._state.name}"
        shift = now - self._paused_at
        self._plan.times = self._plan.times + shift
        self._hold_since += shift
        if self._last_chunk_time is not None:
            self._last_chunk_time += shift
        self._last_tick = None
        self._state = State.RUNNING
        self._message = f"resumed after {shift:.2f} s pause"
        return True, self._message

    def estop(self, now: float) -> tuple[bool, str]:
        """Emergency stop: drop the plan and hold; the node also asks the arm to disable torque."""
        self._state = State.ESTOP
        self._plan = _Plan.empty(self._n)
        self._outstanding = None
        self._message = "E-STOP: holding, torque disable requested; call start to leave e-stop"
        return True, self._message

    @property
    def state(self) -> State:
        return self._state

    # ------------------------------------------------------------------ tick

    def tick(self, now: float, scheduled: float | None = None) -> TickResult:
        """One control tick at node time ``now``: action for now, safety envelope, maybe a request.

        ``scheduled`` is the time the tick was due (the timer's grid); a chunk that starts from a hold is put
        on that grid, so late or catch-up ticks still find its first action.
        """
        if self._state in (State.STOPPED, State.PAUSED, State.ESTOP):  # the arm holds its last goal
            return TickResult(None, False, None, self._state, self._message)
        self._last_tick = now if scheduled is None else scheduled
        if not self.arm_ready:
            self._set_holding(True, "waiting for the arm: " + self._arm_text())
            return TickResult(None, False, None, State.HOLDING, self._message)

        deadman = self._deadman(now)
        if deadman:
            if len(self._plan):
                self._plan = _Plan.empty(self._n)
                self._hold_since = now
            self._count_idle()
            self._set_holding(True, deadman)
            return TickResult(self._hold_command(), False, None, State.HOLDING, self._message)

        target, executed = self._action_for(now)
        if executed:
            self._c.executed_steps += 1
            self._set_holding(False, "running")
        else:
            self._count_idle()
            self._set_holding(True, "holding: nothing planned for now" + self._waiting_text(now))
            target = self._last_command
        command = self._envelope(target) if target is not None else None
        if command is not None:
            self._last_command = command
        request = self._maybe_request(now)
        state = State.RUNNING if executed else State.HOLDING
        return TickResult(command, executed, request, state, self._message)

    def stats(self, now: float) -> ExecutorStats:
        future = self._plan.times - self._plan.dt / 2 > now if len(self._plan) else np.zeros(0, bool)
        horizon = float(self._plan.times[-1] + self._plan.dt / 2 - now) if len(self._plan) else 0.0
        state = self._state
        if state == State.RUNNING and self._holding:
            state = State.HOLDING
        c = self._c
        return ExecutorStats(
            state=state,
            mode=self.config.mode,
            message=self._message,
            horizon_left_s=max(0.0, horizon),
            actions_left=int(np.count_nonzero(future)),
            executed_steps=c.executed_steps,
            idle_ticks=c.idle_ticks,
            idle_ticks_before_first_chunk=c.idle_ticks_before_first_chunk,
            chunks_received=c.chunks_received,
            chunks_dropped=c.chunks_dropped,
            requests_sent=c.requests_sent,
            request_timeouts=c.request_timeouts,
            limited_ticks=c.limited_ticks,
            last_boundary_jump=c.last_boundary_jump,
            max_boundary_jump=c.max_boundary_jump,
            last_observation_to_execution_s=c.last_observation_to_execution_s,
            last_receipt_to_execution_s=c.last_receipt_to_execution_s,
            last_request_round_trip_s=c.last_request_round_trip_s,
            tick_jitter_p50_s=self.jitter.percentile(50),
            tick_jitter_p99_s=self.jitter.percentile(99),
            tick_jitter_max_s=self.jitter.maximum(),
            last_command=None if self._last_command is None else self._last_command.copy(),
            last_drop_reason=self._last_drop_reason,
        )

    # ------------------------------------------------------------------ internals

    def _count_idle(self) -> None:
        if self._c.first_chunk_seen:
            self._c.idle_ticks += 1
        else:
            self._c.idle_ticks_before_first_chunk += 1

    def _set_holding(self, holding: bool, message: str) -> None:
        self._holding = holding
        self._message = message

    def _waiting_text(self, now: float) -> str:
        if self._outstanding is None:
            return ""
        return f" (waiting {now - self._outstanding[1]:.2f} s for request {self._outstanding[0]})"

    def _hold_command(self) -> np.ndarray | None:
        return None if self._last_command is None else self._last_command.copy()

    def _arm_text(self) -> str:
        return "no status from the arm node yet" if self._arm is None else self._arm.message

    def _deadman(self, now: float) -> str:
        cfg = self.config
        if self._joint_state_time is None:
            return "holding: no joint state measured since the arm was enabled (is the arm node running?)"
        if self._last_command is None:
            self._last_command = self._joint_state.copy()
        if cfg.joint_state_timeout_s > 0 and now - self._joint_state_time > cfg.joint_state_timeout_s:
            return f"deadman: no fresh joint state for {now - self._joint_state_time:.2f} s"
        since_chunk = now - (self._last_chunk_time if self._last_chunk_time is not None else self._started_at)
        if cfg.chunk_timeout_s > 0 and len(self._plan) and since_chunk > cfg.chunk_timeout_s:
            return f"deadman: no chunk for {since_chunk:.2f} s"
        return ""

    def _expire(self, now: float) -> None:
        """Drop actions whose slot has ended; remember when the plan ran dry (the robot holds since)."""
        plan = self._plan
        if not len(plan):
            return
        half = plan.dt / 2
        if plan.times[-1] + half <= now:
            self._hold_since = float(plan.times[-1] + half)
            self._plan = _Plan.empty(self._n)
        else:
            plan.keep(plan.times + half > now)

    def _action_for(self, now: float) -> tuple[np.ndarray | None, bool]:
        """The planned action whose slot [t - dt/2, t + dt/2) contains ``now``, if any."""
        self._expire(now)
        plan = self._plan
        if not len(plan) or plan.times[0] - plan.dt / 2 > now:
            return None, False
        source = int(plan.source[0])
        if self._awaiting_first_exec is not None and self._awaiting_first_exec[0] == source:
            _, stamp, receipt = self._awaiting_first_exec
            self._c.last_observation_to_execution_s = now - stamp
            self._c.last_receipt_to_execution_s = now - receipt
            self._awaiting_first_exec = None
        return plan.positions[0].copy(), True

    def _envelope(self, target: np.ndarray) -> np.ndarray:
        """Clamp to the joint limits, then limit the step from the last command."""
        command = np.clip(target, self._lo, self._hi)
        if self._last_command is not None:
            step = np.clip(command - self._last_command, -self.config.max_step_rad, self.config.max_step_rad)
            command = self._last_command + step
        if not np.array_equal(command, target):
            self._c.limited_ticks += 1
        return command

    def _maybe_request(self, now: float) -> RequestOrder | None:
        cfg = self.config
        if self._outstanding is not None:
            if cfg.request_timeout_s > 0 and now - self._outstanding[1] > cfg.request_timeout_s:
                self._c.request_timeouts += 1
                self._outstanding = None
            else:
                return None
        plan = self._plan
        future = plan.times - plan.dt / 2 > now if len(plan) else np.zeros(0, bool)
        left = int(np.count_nonzero(future))
        empty = not self._plan_active(now)
        if cfg.mode == "sync":
            if not empty:
                return None
        elif not empty and self._horizon_actions and left / self._horizon_actions > cfg.threshold:
            return None
        order = RequestOrder(
            request_id=self._next_request_id,
            must_go=bool(empty),
            pending_time_from_start=plan.times[future] - now,
            pending_positions=plan.positions[future].copy(),
        )
        self._next_request_id += 1
        self._outstanding = (order.request_id, now)
        self._c.requests_sent += 1
        return order

    def _validate(self, now: float, chunk: Chunk) -> np.ndarray:
        """The chunk's positions in ``joint_names`` order; raises :class:`_RejectError` when refused."""
        self._check_accepting(chunk)
        names = list(chunk.joint_names)
        if sorted(names) != sorted(self.config.joint_names) or len(names) != self._n:
            raise _RejectError(
                f"joint names {names} do not match the executor's joint_names {list(self.config.joint_names)}"
            )
        try:
            check_chunk(chunk)
        except ValueError as exc:
            raise _RejectError(str(exc)) from None
        self._check_timing(now, chunk)
        return np.asarray(chunk.positions, float)[:, [names.index(j) for j in self.config.joint_names]]

    def _check_accepting(self, chunk: Chunk) -> None:
        """Running, the arm enabled, and the chunk computed after the arm's latest torque-on."""
        if self._state not in (State.RUNNING, State.PAUSED):
            raise _RejectError(f"executor is {self._state.name}")
        if self._state == State.PAUSED:
            raise _RejectError("executor is paused (plan frozen)")
        if not self.arm_ready:
            raise _RejectError("the arm is not enabled: " + self._arm_text())
        if chunk.stamp < self._arm.enabled_since:
            raise _RejectError(
                f"computed from an observation {self._arm.enabled_since - chunk.stamp:.2f} s older than the "
                f"arm's latest torque-on (epoch {self._arm.epoch})"
            )

    def _check_timing(self, now: float, chunk: Chunk) -> None:
        """dt as configured, not a duplicate, not from the future, not too old, not stale, joints alive."""
        cfg = self.config
        if cfg.expected_dt_s > 0 and abs(chunk.dt - cfg.expected_dt_s) > 1e-3 * cfg.expected_dt_s:
            raise _RejectError(f"dt {chunk.dt:.6f} s differs from expected_dt_s {cfg.expected_dt_s:.6f} s")
        seen = self._c.seen_ids.get(chunk.chunk_id)
        if seen is not None and chunk.stamp <= seen:
            raise _RejectError(f"duplicate chunk id {chunk.chunk_id}")
        if chunk.stamp - now > cfg.future_stamp_tolerance_s:
            raise _RejectError(
                f"stamp {chunk.stamp - now:.3f} s in the future (tolerance "
                f"{cfg.future_stamp_tolerance_s} s): clocks out of sync?"
            )
        if cfg.max_chunk_age_s > 0 and now - chunk.stamp > cfg.max_chunk_age_s:
            raise _RejectError(
                f"observation is {now - chunk.stamp:.2f} s old (max_chunk_age_s {cfg.max_chunk_age_s})"
            )
        if cfg.joint_state_timeout_s > 0 and (
            self._joint_state_time is None or now - self._joint_state_time > cfg.joint_state_timeout_s
        ):
            raise _RejectError("no fresh joint state (deadman active)")
        if cfg.mode == "sync" and self._plan_active(now):
            raise _RejectError("sync mode: still executing the previous chunk")
        last_action = chunk.stamp + float(chunk.time_from_start[-1]) + chunk.dt / 2
        if not self._plan_active(now):
            anchor = self._resume_anchor(chunk)
            if last_action <= anchor:
                raise _RejectError(f"stale: every action is before the hold started {now - anchor:.2f} s ago")
        elif last_action <= now:
            raise _RejectError(
                f"stale: every action is in the past (observation {now - chunk.stamp:.2f} s old)"
            )

    def _plan_active(self, now: float) -> bool:
        plan = self._plan
        return bool(len(plan)) and bool(plan.times[-1] + plan.dt / 2 > now)

    def _merge(self, now: float, chunk: Chunk, positions: np.ndarray) -> float:
        """Merge a validated chunk into the plan; returns the boundary jump (rad) at the next tick."""
        times = chunk.stamp + np.asarray(chunk.time_from_start, float)
        half = chunk.dt / 2
        next_tick = self._next_tick(now)
        old = self._plan
        if not self._plan_active(now):
            # Stall compensation: the robot stands still since `anchor`; resume the chunk from there.
            anchor = self._resume_anchor(chunk)
            keep = times + half > anchor
            times, positions = times[keep], positions[keep]
            times = times - times[0] + next_tick
            self._plan = _Plan(
                times, positions.copy(), np.full(len(times), chunk.chunk_id, np.int64), chunk.dt
            )
            held = self._last_command if self._last_command is not None else positions[0]
            return float(np.max(np.abs(positions[0] - held)))
        # Latency compensation: actions whose slot has ended are gone.
        keep = times + half > now
        times, positions = times[keep], positions[keep]
        old.keep(old.times + old.dt / 2 > now)
        old_values, covered = old.value_at(times)
        weights = self._new_weights(covered)
        blended = positions * weights[:, None] + old_values * (1 - weights[:, None])
        before = old.times < times[0] - half
        new_plan = _Plan(
            np.concatenate([old.times[before], times]),
            np.concatenate([old.positions[before], blended]),
            np.concatenate([old.source[before], np.full(len(times), chunk.chunk_id, np.int64)]),
            chunk.dt,
        )
        old_at, old_covers = old.value_at(np.array([next_tick]))
        new_at, _ = new_plan.value_at(np.array([next_tick]))
        reference = old_at[0] if old_covers[0] else self._last_command
        self._plan = new_plan
        return 0.0 if reference is None else float(np.max(np.abs(new_at[0] - reference)))

    def _resume_anchor(self, chunk: Chunk) -> float:
        """Time from which a chunk resumes after a hold: sync runs the whole chunk; async skips what the
        robot had already done before the hold started (the observation may predate the hold)."""
        return chunk.stamp if self.config.mode == "sync" else max(chunk.stamp, self._hold_since)

    def _next_tick(self, now: float) -> float:
        """Expected time of the next tick: one period after the last scheduled one, or now when overdue."""
        if self._last_tick is None:
            return now
        return max(now, self._last_tick + self.config.period_s)

    def _new_weights(self, covered: np.ndarray) -> np.ndarray:
        """Weight of the new chunk per action: fixed over the overlap, or a linear ramp for crossfade."""
        weights = np.ones(len(covered))
        overlap = np.flatnonzero(covered)
        if self.config.blend == "crossfade":
            weights[overlap] = np.arange(1, len(overlap) + 1) / (len(overlap) + 1)
        else:
            weights[overlap] = FIXED_NEW_WEIGHTS[self.config.blend]
        return weights


class _RejectError(Exception):
    """A chunk failed validation; the message says why."""
