"""ROS-free control logic of an SO-100/SO-101 arm on a Feetech bus: follower (with safety) and leader.

Units: joint positions in radians, zero at the middle of each joint's calibrated range (LeRobot's degree
mode, ``rad = (raw - mid) * 2*pi / 4095``). Trajectory time (``now``) is whatever clock the caller uses
(the node's ROS clock, so ``use_sim_time`` works); protection timers (overload, silence, reconnect) run on
the monotonic clock because they are about physics, not about the plan.

One control cycle (:meth:`ArmController.step`):

1. sync read of every Present_Position (+ the status byte of each reply);
2. one servo's telemetry block (torque and goal read back, velocity, load, voltage, temperature, status,
   current), round-robin;
3. protection: overload/heat/stall back the joint off to where it is and hold, a hard limit, a silent
   servo or a servo that dropped its torque disables torque;
4. target = the active trajectory sampled at ``now`` (or the held target), clamped to the calibrated range;
5. goal = :func:`next_goal`: towards the target by at most ``max_velocity`` per second, always within
   ``max_step`` of the measured position (a held-back joint never pushes harder than that), never outside
   the range; one sync write of the goals that changed.

The arm-safety rule: after any interruption (torque enabled again, reconnect, fault, restart) the arm
holds where it physically is, and moves only on a command stamped after that torque-on (its *epoch*).
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from so100_driver import protocol
from so100_driver.bus import BusDisconnectedError, BusError, BusPortBusyError, FeetechBus, Telemetry
from so100_driver.calibration import EEPROM_REGISTERS, ArmCalibration, MotorCalibration, compare_with_servos

STEPS_PER_RAD = 4095.0 / (2.0 * math.pi)
STRESS_BITS = protocol.ErrorBit.OVERLOAD | protocol.ErrorBit.OVERHEAT | protocol.ErrorBit.OVERCURRENT
FATAL_BITS = protocol.ErrorBit.ANGLE


class CommandError(ValueError):
    """A joint command was rejected; the message says what was wrong and what is expected."""


class ArmState(enum.Enum):
    DISCONNECTED = "disconnected"  # port closed / device gone / servos missing: retrying
    IDLE = "idle"  # connected, torque off
    ENABLED = "enabled"  # torque on, following targets
    FAULT = "fault"  # unrecoverable fault: torque disabled, waits for an explicit torque-on


@dataclass(frozen=True)
class Joint:
    """One joint: servo id and the calibration of that servo (LeRobot calibration fields)."""

    name: str
    servo_id: int
    range_min: int
    range_max: int
    homing_offset: int = 0
    drive_mode: int = 0
    is_gripper: bool = False

    @property
    def mid(self) -> float:
        return (self.range_min + self.range_max) / 2.0

    def to_rad(self, raw: int) -> float:
        rad = (raw - self.mid) / STEPS_PER_RAD
        return -rad if self.drive_mode else rad

    def to_raw(self, rad: float) -> int:
        rad = -rad if self.drive_mode else rad
        return round(min(max(rad * STEPS_PER_RAD + self.mid, self.range_min), self.range_max))

    @property
    def lower(self) -> float:
        return min(self.to_rad(self.range_min), self.to_rad(self.range_max))

    @property
    def upper(self) -> float:
        return max(self.to_rad(self.range_min), self.to_rad(self.range_max))


@dataclass
class SafetyConfig:
    """Protection thresholds. Loads in % of max torque, temperatures in deg C, times in seconds."""

    max_step: float = 0.1  # rad: no goal is written farther than this from the measured position
    max_velocity: float = 3.0  # rad/s: how fast a goal may move towards its target
    overload_load_percent: float = 80.0
    overload_backoff_s: float = 0.3  # sustained overload before backing off
    hard_fault_s: float = 2.0  # still stressed this long after backing off -> torque off
    recover_s: float = 1.0  # calm this long -> the joint accepts commands again
    temperature_warn_c: float = 55.0
    temperature_backoff_c: float = 60.0
    temperature_hard_c: float = 65.0
    gripper_stall_current_ma: float = 1000.0
    gripper_stall_error_rad: float = 0.08
    gripper_stall_s: float = 0.5
    gripper_torque_limit: int = 500  # 0.1 % units (Max_Torque_Limit/Torque_Limit)
    gripper_protection_current: int = 250  # 6.5 mA units
    silent_fault_s: float = 0.5  # a servo silent this long while torque is on -> torque off
    reconnect_period_s: float = 0.5
    stall_torque_nm: float = 2.94  # effort = load fraction * this (STS3215 12 V: 30 kg.cm)


# Registers written at connect (LeRobot's configure()); EEPROM ones only when they differ.
SERVO_SETTINGS: dict[str, int] = {
    "Return_Delay_Time": 0,
    "Operating_Mode": 0,
    "P_Coefficient": 16,
    "I_Coefficient": 0,
    "D_Coefficient": 32,
    "Maximum_Acceleration": 254,
}


@dataclass
class JointHealth:
    """Per-joint protection and telemetry state."""

    last_seen: float = -math.inf  # monotonic time of the last fresh position
    position_raw: int | None = None
    reply_error: int = 0
    telemetry: Telemetry | None = None
    stressed_since: float | None = None
    calm_since: float | None = None
    backed_off: bool = False
    backoff_reason: str = ""
    velocity: float = 0.0
    last_sample: tuple[float, float] | None = None  # (monotonic time, rad)


@dataclass
class CycleResult:
    """What one control cycle produced, for publishing."""

    state: ArmState
    positions: dict[str, float] | None  # rad; None unless every joint was read fresh this cycle
    velocities: dict[str, float] | None
    efforts: dict[str, float] | None  # N·m; None until every joint's load has been read (unknown is not 0)
    goals: dict[str, float] | None  # rad, the goals the servos hold after this cycle
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class StatusReport:
    """ROS-free diagnostic status: level 0 OK, 1 WARN, 2 ERROR, 3 STALE."""

    name: str
    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)


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


def next_goal(
    previous: float, target: float, measured: float, lower: float, upper: float, step: float, max_step: float
) -> float | None:
    """The goal to write for one joint this cycle, or None to leave the servo's goal as it is.

    The goal moves from ``previous`` towards ``target`` (clamped to ``[lower, upper]``) by at most
    ``step``, and always ends within ``max_step`` of ``measured``: a joint held back (an obstacle, a load,
    a hand) is never pushed harder than at ``max_step`` of error, and its goal follows it back. None when
    the goal does not change, or when no goal inside the range is within ``max_step`` of the joint (it
    was forced out of its range: the servo keeps the goal it has).
    """
    target = min(max(target, lower), upper)
    goal = previous + min(max(target - previous, -step), step)
    goal = min(max(goal, measured - max_step), measured + max_step)
    if goal == previous or not lower <= goal <= upper:
        return None
    return goal


def validate_command(
    joints: Mapping[str, Joint], names: Sequence[str], points: Sequence[tuple[float, Sequence[float]]]
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


class ArmLink:
    """Connection, startup checks, position reads and reconnection shared by follower and leader."""

    def __init__(
        self,
        bus: FeetechBus,
        joints: Sequence[Joint],
        safety: SafetyConfig | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.joints = {j.name: j for j in joints}
        self.by_id = {j.servo_id: j for j in joints}
        self.ids = [j.servo_id for j in joints]
        self.safety = safety or SafetyConfig()
        self.monotonic = monotonic
        self.state = ArmState.DISCONNECTED
        self.health = {j.name: JointHealth() for j in joints}
        self.calibration_problems: list[str] = []
        self.connect_error = ""
        self.fault_message = ""
        self.events: list[str] = []  # human-readable log lines for the node to forward
        self._lock = threading.RLock()
        self._next_connect = 0.0
        self._telemetry_index = 0
        self.cycles = 0
        self.reconnect_attempts = 0
        self._last_stats: tuple[float, dict[str, int]] | None = None

    # ------------------------------------------------------------------------------------------ helpers
    def _event(self, text: str) -> None:
        self.events.append(text)
        del self.events[:-50]

    @property
    def lock(self) -> threading.RLock:
        """Held for every cycle and state change; hold it to read several attributes consistently."""
        return self._lock

    def status_message(self) -> str:
        """One line for the arm's state: the fault, the refusal or bus error, or that torque is on."""
        if self.state == ArmState.DISCONNECTED:
            return f"disconnected, retrying: {self.connect_error}"
        if self.state == ArmState.FAULT:
            return f"FAULT, torque disabled: {self.fault_message}"
        if self.calibration_problems:
            return "calibration mismatch, torque stays off: " + "; ".join(self.calibration_problems)
        return "torque on" if self.state == ArmState.ENABLED else "torque off"

    def drain_events(self) -> list[str]:
        with self._lock:
            events, self.events = self.events, []
            return events

    # --------------------------------------------------------------------------------------- connection
    def connect(self, now: float = 0.0) -> bool:
        """Open the bus, check every servo and the calibration; True when connected (state IDLE).

        ``now`` is the trajectory clock's time (the node clock), for the epoch of a torque resumed on
        reconnect. A port held by another program raises :class:`BusPortBusyError`.
        """
        with self._lock:
            try:
                if not self.bus.is_open:
                    self.bus.open()
                self._check_servos()
                self.calibration_problems = self.check_calibration()
                for text in self.calibration_problems:
                    self._event("calibration mismatch: " + text)
                self.connect_error = ""
                self.state = ArmState.IDLE
                self._on_connected(now)
            except BusPortBusyError:
                self.state = ArmState.DISCONNECTED
                raise
            except BusError as exc:
                self.connect_error = str(exc)
                self.state = ArmState.DISCONNECTED
                return False
            return True

    def _check_servos(self) -> None:
        result = self.bus.read_register(self.ids, "Model_Number")
        problems = [f"id {i} ({self.by_id[i].name}) does not answer" for i in result.missing]
        problems += [
            f"id {i} ({self.by_id[i].name}) has model number {m}, expected {protocol.MODEL_NUMBER_STS3215}"
            for i, m in result.values.items()
            if m != protocol.MODEL_NUMBER_STS3215
        ]
        if problems:
            raise BusError(
                "servo check failed on "
                + self.bus.port_name
                + ": "
                + "; ".join(problems)
                + ". Check power, cabling, ids (so100-setup-motors / lerobot-setup-motors) and the port."
            )

    def calibration(self) -> ArmCalibration:
        """The joints' calibration as a LeRobot :class:`ArmCalibration`."""
        return ArmCalibration(
            {
                j.name: MotorCalibration(j.servo_id, j.drive_mode, j.homing_offset, j.range_min, j.range_max)
                for j in self.joints.values()
            }
        )

    def check_calibration(self) -> list[str]:
        """Differences between the servos' EEPROM (offset, min/max limits) and the calibration file."""
        eeprom: dict[int, dict[str, int]] = {i: {} for i in self.ids}
        for register in EEPROM_REGISTERS.values():
            read = self.bus.read_register(self.ids, register)
            if read.missing:
                raise BusError(f"cannot read {register} from ids {list(read.missing)}")
            for servo_id, value in read.values.items():
                eeprom[servo_id][register] = value
        return compare_with_servos(self.calibration(), eeprom)

    def calibration_fix_hint(self) -> str:
        return (
            "The servos' EEPROM does not match the calibration file. Either write the file to the servos "
            "(`so100-calibrate --port PORT --file FILE --write-only`), recalibrate "
            "(`so100-calibrate --port PORT --file FILE`), or set the `calibration_file` parameter to the "
            "file that belongs to this arm."
        )

    def _on_connected(self, now: float) -> None:
        """Hook for subclasses (configure servos, resume torque)."""

    def shutdown(self, torque_off: bool = True) -> None:
        """Close the bus."""
        with self._lock:
            self.bus.close()
            self.state = ArmState.DISCONNECTED

    def maybe_reconnect(self, now: float = 0.0) -> bool:
        """Try to reconnect if due (every ``reconnect_period_s``); True when connected now."""
        mono = self.monotonic()
        if mono < self._next_connect:
            return False
        self._next_connect = mono + self.safety.reconnect_period_s
        self.reconnect_attempts += 1
        try:
            return self.connect(now)
        except BusPortBusyError as exc:  # someone took the port while it was gone: keep trying
            self.connect_error = str(exc)
            return False

    def _lost(self, exc: BusDisconnectedError) -> None:
        self.connect_error = str(exc)
        self._event(f"bus lost: {exc}; retrying every {self.safety.reconnect_period_s} s")
        self.state = ArmState.DISCONNECTED
        self._next_connect = self.monotonic() + self.safety.reconnect_period_s

    # -------------------------------------------------------------------------------------------- reads
    def _read_positions(self) -> dict[str, float]:
        """Fresh positions (rad) of the joints that answered; updates health and velocity estimates."""
        result = self.bus.read_register(self.ids, "Present_Position")
        now = self.monotonic()
        fresh: dict[str, float] = {}
        for servo_id, raw in result.values.items():
            joint = self.by_id[servo_id]
            health = self.health[joint.name]
            rad = joint.to_rad(raw)
            if health.last_sample is not None and now > health.last_sample[0]:
                speed = (rad - health.last_sample[1]) / (now - health.last_sample[0])
                health.velocity = 0.5 * health.velocity + 0.5 * speed
            health.last_sample = (now, rad)
            health.last_seen = now
            health.position_raw = raw
            health.reply_error = result.errors[servo_id]
            fresh[joint.name] = rad
        return fresh

    def _read_next_telemetry(self) -> tuple[str, Telemetry | None]:
        """Read the telemetry of the next joint (round-robin); returns its name and what was read."""
        joint = list(self.joints.values())[self._telemetry_index % len(self.joints)]
        self._telemetry_index += 1
        telemetry = self.bus.read_telemetry(joint.servo_id, retries=0)
        if telemetry is not None:
            self.health[joint.name].telemetry = telemetry
        return joint.name, telemetry

    # -------------------------------------------------------------------------------------- diagnostics
    def servo_reports(self, prefix: str) -> list[StatusReport]:
        reports = []
        now = self.monotonic()
        for name, joint in self.joints.items():
            health = self.health[name]
            tel = health.telemetry
            bits = health.reply_error | (tel.error_bits if tel else 0)
            level, problems = 0, []
            age = now - health.last_seen
            if self.state != ArmState.DISCONNECTED and age > self.safety.silent_fault_s:
                level, problems = 2, [f"servo {joint.servo_id} not answering for {age:.1f} s"]
            if bits:
                level = max(level, 2 if bits & (STRESS_BITS | FATAL_BITS) else 1)
                problems.append("error bits: " + protocol.describe_error_bits(bits))
            if tel and tel.temperature >= self.safety.temperature_warn_c:
                level = max(level, 1)
                problems.append(f"hot: {tel.temperature} C")
            if health.backed_off:
                level = max(level, 1)
                problems.append(f"backed off and holding: {health.backoff_reason}")
            values = {
                "servo_id": str(joint.servo_id),
                "position_raw": str(health.position_raw),
                "error_bits": ",".join(protocol.decode_error_bits(bits)) or "none",
                "backed_off": str(health.backed_off),
            }
            telemetry_keys = (
                "temperature_c",
                "voltage_v",
                "load_percent",
                "current_ma",
                "velocity_raw",
                "moving",
            )
            values |= dict.fromkeys(telemetry_keys, "unknown")
            if tel:
                values |= {
                    "temperature_c": str(tel.temperature),
                    "voltage_v": f"{tel.voltage:.1f}",
                    "load_percent": f"{tel.load_percent:.1f}",
                    "current_ma": f"{tel.current_ma:.0f}",
                    "velocity_raw": str(tel.velocity),
                    "moving": str(tel.moving),
                }
            reports.append(StatusReport(f"{prefix}: {name}", level, "; ".join(problems) or "OK", values))
        return reports

    def _rates(self, stats: dict[str, int]) -> dict[str, str]:
        """Per-second bus error and retry rates since the previous report."""
        now = self.monotonic()
        previous, self._last_stats = self._last_stats, (now, stats)
        if previous is None or now <= previous[0]:
            return {"errors_per_s": "0.0", "retries_per_s": "0.0", "failed_read_ratio": "0.000"}
        dt = now - previous[0]
        delta = {k: stats[k] - previous[1][k] for k in stats}
        errors = delta["timeouts"] + delta["corrupt"]
        ratio = delta["failed_transactions"] / delta["transactions"] if delta["transactions"] else 0.0
        return {
            "errors_per_s": f"{errors / dt:.1f}",
            "retries_per_s": f"{delta['retries'] / dt:.1f}",
            "failed_read_ratio": f"{ratio:.3f}",
        }

    def bus_report(self, prefix: str) -> StatusReport:
        stats = self.bus.stats.snapshot()
        level = 0
        message = self.state.value
        if self.state == ArmState.DISCONNECTED:
            level, message = 2, f"disconnected, retrying: {self.connect_error}"
        elif self.state == ArmState.FAULT:
            level, message = 2, f"FAULT, torque disabled: {self.fault_message}"
        elif self.calibration_problems:
            level, message = 2, "calibration mismatch: " + "; ".join(self.calibration_problems)
        values = {k: str(v) for k, v in stats.items()}
        values |= self._rates(stats)
        values |= {
            "state": self.state.value,
            "port": self.bus.port_name,
            "cycles": str(self.cycles),
            "reconnect_attempts": str(self.reconnect_attempts),
        }
        return StatusReport(f"{prefix}: bus", level, message, values)


class ArmController(ArmLink):
    """Follower arm: targets from trajectories, protection, torque management."""

    def __init__(
        self,
        bus: FeetechBus,
        joints: Sequence[Joint],
        safety: SafetyConfig | None = None,
        configure_servos: bool = True,
        telemetry_every: int = 1,
        monotonic: Callable[[], float] = time.monotonic,
        period_s: float = 0.01,
    ) -> None:
        super().__init__(bus, joints, safety, monotonic)
        self.configure_servos = configure_servos
        self.telemetry_every = max(1, int(telemetry_every))
        self.period_s = float(period_s)
        self.targets: dict[str, float] = {}
        self.goals: dict[str, float] = {}  # what each servo holds (as written, or as read back)
        self.plan: TrajectoryPlan | None = None
        self.resume_torque = False
        self.rejected_commands = 0
        self.last_rejection = ""
        self.epoch = 0  # number of torque-ons so far
        self.enabled_since: float | None = None  # trajectory-clock time of the latest torque-on
        self.goal_readback_mismatches = 0

    @property
    def step_per_cycle(self) -> float:
        """How far a goal may move towards its target in one cycle (``max_velocity`` at the cycle rate)."""
        return self.safety.max_velocity * self.period_s

    # ------------------------------------------------------------------------------------ configuration
    def _on_connected(self, now: float) -> None:
        if self.configure_servos:
            self._configure()
        if self.resume_torque:
            if self.calibration_problems:
                ok, message = False, "calibration mismatch: " + "; ".join(self.calibration_problems)
            else:
                ok, message = self._enable(now)
            if ok:
                self._event(
                    "reconnected: torque on, holding the measured pose; the previous plan was dropped, "
                    "the arm moves again on the next command"
                )
            else:
                self.resume_torque = False
                self._event("reconnected, but torque stays off: " + message)

    def _configure(self) -> None:
        wanted = {j.servo_id: dict(SERVO_SETTINGS) for j in self.joints.values()}
        for joint in self.joints.values():
            if joint.is_gripper:
                wanted[joint.servo_id] |= {
                    "Max_Torque_Limit": self.safety.gripper_torque_limit,
                    "Protection_Current": self.safety.gripper_protection_current,
                    "Overload_Torque": 25,
                }
        names = sorted({n for settings in wanted.values() for n in settings})
        changes: list[tuple[int, str, int]] = []
        for name in names:
            ids = [i for i in self.ids if name in wanted[i]]
            read = self.bus.read_register(ids, name)
            if read.missing:
                raise BusError(f"cannot read {name} from ids {list(read.missing)} while configuring")
            for servo_id in ids:
                if read.values.get(servo_id) != wanted[servo_id][name]:
                    changes.append((servo_id, name, wanted[servo_id][name]))
        if changes:
            self._event(f"configuring servos (torque off while writing EEPROM): {changes}")
            for servo_id in {c[0] for c in changes}:
                self.bus.write_register(servo_id, "Torque_Enable", 0)
                self.bus.write_register(servo_id, "Lock", 0)
            for servo_id, name, value in changes:
                self.bus.write_register(servo_id, name, value)
            for servo_id in {c[0] for c in changes}:
                self.bus.write_register(servo_id, "Lock", 1)
        ram = {j.servo_id: 254 for j in self.joints.values()}
        self.bus.sync_write_register("Acceleration", ram)
        gripper_ids = {
            j.servo_id: self.safety.gripper_torque_limit for j in self.joints.values() if j.is_gripper
        }
        if gripper_ids:
            self.bus.sync_write_register("Torque_Limit", gripper_ids)

    # ---------------------------------------------------------------------------------------- torque
    def enable_torque(self, now: float) -> tuple[bool, str]:
        """Torque on, holding the measured pose; commands stamped before ``now`` are refused from then on.

        Refused on a calibration mismatch, a servo that does not answer, two position reads that do not
        agree, or a joint farther than ``max_step`` outside its calibrated range.
        """
        with self._lock:
            if self.state == ArmState.DISCONNECTED:
                return False, f"not connected to the servo bus: {self.connect_error}"
            if self.state == ArmState.ENABLED:
                return True, "torque already enabled"
            try:
                self.calibration_problems = self.check_calibration()
            except BusDisconnectedError as exc:
                self._lost(exc)
                return False, str(exc)
            except BusError as exc:
                return False, f"cannot verify the calibration: {exc}"
            if self.calibration_problems:
                return False, (
                    "refusing to enable torque: "
                    + "; ".join(self.calibration_problems)
                    + ". "
                    + self.calibration_fix_hint()
                )
            return self._enable(now)

    def _hold_pose(self) -> tuple[dict[str, int] | None, str]:
        """Raw positions to hold at torque-on, from two fresh reads that agree; or None and why not."""
        first = self._read_positions()
        second = self._read_positions()
        missing = [n for n in self.joints if n not in first or n not in second]
        if missing:
            return None, f"no position from {missing}"
        tolerance = max(2.0, self.safety.max_step * STEPS_PER_RAD)
        moving = [
            f"{n} ({abs(second[n] - first[n]) * STEPS_PER_RAD:.0f} steps)"
            for n in self.joints
            if abs(second[n] - first[n]) * STEPS_PER_RAD > tolerance
        ]
        if moving:
            return None, f"the position of {', '.join(moving)} changed between two reads: hold the arm still"
        outside = []
        for name, joint in self.joints.items():
            rad = second[name]
            if rad < joint.lower - self.safety.max_step or rad > joint.upper + self.safety.max_step:
                raw = self.health[name].position_raw
                outside.append(
                    f"{name} is at {raw}, outside its calibrated range {joint.range_min}..{joint.range_max} "
                    f"by {math.degrees(max(joint.lower - rad, rad - joint.upper)):.1f} deg"
                )
        if outside:
            return None, (
                "; ".join(outside)
                + f" (more than max_step {self.safety.max_step} rad): move it back into its range by hand, "
                "or recalibrate"
            )
        return {n: self.joints[n].to_raw(second[n]) for n in self.joints}, ""

    def _enable(self, now: float) -> tuple[bool, str]:
        try:
            hold, problem = self._hold_pose()
            if hold is None:
                return False, "refusing to enable torque: " + problem
            for _ in self.joints:  # protection starts from fresh temperatures and loads, not old ones
                self._read_next_telemetry()
            self.bus.sync_write_register(
                "Goal_Position", {self.joints[n].servo_id: raw for n, raw in hold.items()}
            )
            for joint in self.joints.values():
                self.bus.write_register(joint.servo_id, "Torque_Enable", 1)
        except BusDisconnectedError as exc:
            self._lost(exc)
            return False, str(exc)
        except BusError as exc:
            self._torque_off_best_effort()
            return False, f"torque enable failed, torque disabled again: {exc}"
        self.goals = {name: self.joints[name].to_rad(raw) for name, raw in hold.items()}
        self.targets = dict(self.goals)
        self.plan = None
        for health in self.health.values():
            health.backed_off, health.stressed_since, health.calm_since = False, None, None
        self.fault_message = ""
        self.resume_torque = True
        self.state = ArmState.ENABLED
        self.epoch += 1
        self.enabled_since = now
        return True, "torque enabled, holding the measured position"

    def disable_torque(self) -> tuple[bool, str]:
        """Torque off (the arm goes limp). Clears a FAULT."""
        with self._lock:
            self.resume_torque = False
            self.plan = None
            if self.state == ArmState.DISCONNECTED:
                return False, f"not connected to the servo bus: {self.connect_error}"
            ok = self._torque_off_best_effort()
            self.state = ArmState.IDLE
            self.fault_message = ""
            return (
                ok,
                "torque disabled" if ok else "torque-off broadcast sent, but some servos did not acknowledge",
            )

    def _torque_off_best_effort(self) -> bool:
        """Broadcast torque off (reaches every listening servo), then acknowledged writes; True if acked."""
        acked = True
        try:
            self.bus.sync_write_register("Torque_Enable", {i: 0 for i in self.ids})
            for servo_id in self.ids:
                try:
                    self.bus.write_register(servo_id, "Torque_Enable", 0, retries=3)
                except BusDisconnectedError:
                    raise
                except BusError:
                    acked = False
        except BusDisconnectedError as exc:
            self._lost(exc)
            return False
        return acked

    def _fault(self, message: str) -> None:
        self.fault_message = message
        self._event("FAULT: " + message + "; disabling torque")
        self.resume_torque = False
        self.plan = None
        self._torque_off_best_effort()
        if self.state != ArmState.DISCONNECTED:
            self.state = ArmState.FAULT

    def shutdown(self, torque_off: bool = True) -> None:
        with self._lock:
            if torque_off and self.state in (ArmState.ENABLED, ArmState.FAULT, ArmState.IDLE):
                self._torque_off_best_effort()
            self.bus.close()
            self.state = ArmState.DISCONNECTED

    # -------------------------------------------------------------------------------------- commands
    def reject(self, reason: str) -> None:
        """Count a command refused before it reached :meth:`command` and raise :class:`CommandError`."""
        with self._lock:
            self.rejected_commands += 1
            self.last_rejection = reason
        raise CommandError(reason)

    def command(
        self,
        now: float,
        names: Sequence[str],
        points: Sequence[tuple[float, Sequence[float]]],
        start_time: float | None = None,
    ) -> None:
        """Accept a trajectory (times from ``start_time``, its stamp; default now); raises
        :class:`CommandError`. A command stamped before the latest torque-on is refused: it was issued
        before the interruption, for a pose the arm may no longer be in."""
        with self._lock:
            try:
                validate_command(self.joints, names, points)
                if self.state != ArmState.ENABLED:
                    raise CommandError(
                        f"arm is {self.state.value}: enable torque first (std_srvs/SetBool, torque service)"
                        + (f"; fault: {self.fault_message}" if self.fault_message else "")
                    )
                since = self.enabled_since
                if start_time is not None and since is not None and start_time < since:
                    raise CommandError(
                        f"command stamped {since - start_time:.3f} s before torque was last "
                        "enabled: ignored (after an interruption the arm moves only on newer commands)"
                    )
            except CommandError as exc:
                self.rejected_commands += 1
                self.last_rejection = str(exc)
                raise
            current = self._current_targets(now)
            start = now if start_time is None else start_time
            times = [0.0] + [t for t, _ in points]
            values = [[current[n] for n in names]] + [list(p) for _, p in points]
            self.plan = TrajectoryPlan(start, names, times, values)
            self.targets |= current

    def _current_targets(self, now: float) -> dict[str, float]:
        targets = dict(self.targets)
        if self.plan is not None:
            targets |= {n: v for n, v in self.plan.sample(now).items() if not self.health[n].backed_off}
        return targets

    # ---------------------------------------------------------------------------------------- the cycle
    def step(self, now: float) -> CycleResult:
        """Run one control cycle at trajectory time ``now``; never raises on bus faults."""
        with self._lock:
            self.cycles += 1
            if self.state == ArmState.DISCONNECTED:
                self.maybe_reconnect(now)
                if self.state == ArmState.DISCONNECTED:
                    return CycleResult(self.state, None, None, None, None, tuple(self.joints))
            try:
                return self._cycle(now)
            except BusDisconnectedError as exc:
                self._lost(exc)
                self.plan = None
                return CycleResult(self.state, None, None, None, None, tuple(self.joints))
            except BusError as exc:
                self._event(f"bus error: {exc}")
                return CycleResult(self.state, None, None, None, None, tuple(self.joints))

    def _cycle(self, now: float) -> CycleResult:
        fresh = self._read_positions()
        if self.cycles % self.telemetry_every == 0:
            name, telemetry = self._read_next_telemetry()
            if telemetry is not None and self.state == ArmState.ENABLED:
                self._check_read_back(name, telemetry)
        missing = tuple(n for n in self.joints if n not in fresh)
        mono = self.monotonic()
        goals_written = None
        if self.state == ArmState.ENABLED:
            self._protect(mono, fresh)
        if self.state == ArmState.ENABLED:
            goals_written = self._write_goals(now, fresh)
        complete = not missing
        telemetry_of = {n: self.health[n].telemetry for n in self.joints}
        efforts = None
        if complete and all(telemetry_of.values()):
            efforts = {n: tel.load / 1000.0 * self.safety.stall_torque_nm for n, tel in telemetry_of.items()}
        return CycleResult(
            state=self.state,
            positions=fresh if complete else None,
            velocities={n: self.health[n].velocity for n in self.joints} if complete else None,
            efforts=efforts,
            goals=goals_written,
            missing=missing,
        )

    def _check_read_back(self, name: str, telemetry: Telemetry) -> None:
        """Torque and goal as the servo reports them (read while torque is on, so after the torque-on)."""
        joint = self.joints[name]
        if not telemetry.torque_enabled:
            self._fault(
                f"servo {joint.servo_id} ({name}) dropped its torque by itself (Torque_Enable reads 0: "
                "a protection trip or a supply dip)"
            )
        elif telemetry.goal != joint.to_raw(self.goals[name]):
            self.goals[name] = joint.to_rad(telemetry.goal)  # a lost sync write: what it really drives to
            self.goal_readback_mismatches += 1

    def _protect(self, mono: float, fresh: Mapping[str, float]) -> None:
        cfg = self.safety
        for name, joint in self.joints.items():
            health = self.health[name]
            if mono - health.last_seen > cfg.silent_fault_s:
                self._fault(
                    f"servo {joint.servo_id} ({name}) has not answered for {mono - health.last_seen:.2f} s"
                )
                return
            tel = health.telemetry
            bits = health.reply_error | (tel.error_bits if tel else 0)
            if bits & FATAL_BITS:
                self._fault(f"{name}: {protocol.describe_error_bits(bits & FATAL_BITS)}")
                return
            if tel and tel.temperature >= cfg.temperature_hard_c:
                self._fault(
                    f"{name}: temperature {tel.temperature} C >= hard limit {cfg.temperature_hard_c} C"
                )
                return
            reason = self._stress_reason(joint, health, bits, fresh)
            if reason:
                health.calm_since = None
                if health.stressed_since is None or (health.backed_off and self._releasing(name)):
                    health.stressed_since = mono  # the hard-fault clock starts once the goal is back
                stressed_for = mono - health.stressed_since
                immediate = bool(bits & STRESS_BITS)
                if not health.backed_off and (immediate or stressed_for >= self._backoff_delay(joint)):
                    self._back_off(name, reason, mono)
                elif health.backed_off and stressed_for >= cfg.hard_fault_s:
                    self._fault(f"{name}: {reason} persists {stressed_for:.1f} s after backing off")
                    return
            else:
                health.stressed_since = None
                if health.backed_off:
                    if health.calm_since is None:
                        health.calm_since = mono
                    elif mono - health.calm_since >= cfg.recover_s:
                        health.backed_off = False
                        self._event(f"{name}: recovered ({health.backoff_reason}); accepting commands again")

    def _releasing(self, name: str) -> bool:
        """A backed-off joint whose goal is still stepping back (one cycle's step at a time) to its hold."""
        return abs(self.goals.get(name, 0.0) - self.targets.get(name, 0.0)) > self.step_per_cycle

    def _backoff_delay(self, joint: Joint) -> float:
        return self.safety.gripper_stall_s if joint.is_gripper else self.safety.overload_backoff_s

    def _stress_reason(self, joint: Joint, health: JointHealth, bits: int, fresh: Mapping[str, float]) -> str:
        cfg = self.safety
        tel = health.telemetry
        if bits & STRESS_BITS:
            return "servo reports " + protocol.describe_error_bits(bits & STRESS_BITS)
        if tel is None:
            return ""
        if tel.temperature >= cfg.temperature_backoff_c:
            return f"temperature {tel.temperature} C >= {cfg.temperature_backoff_c} C"
        if abs(tel.load_percent) >= cfg.overload_load_percent:
            return f"load {tel.load_percent:.0f} % >= {cfg.overload_load_percent:.0f} %"
        if joint.is_gripper and joint.name in fresh and joint.name in self.goals:
            error = abs(self.goals[joint.name] - fresh[joint.name])
            if abs(tel.current_ma) >= cfg.gripper_stall_current_ma and error >= cfg.gripper_stall_error_rad:
                return f"gripper stall: {tel.current_ma:.0f} mA with {error:.2f} rad position error"
        return ""

    def _back_off(self, name: str, reason: str, mono: float) -> None:
        health = self.health[name]
        health.backed_off = True
        health.backoff_reason = reason
        health.stressed_since = mono
        if health.last_sample is not None:
            self.targets[name] = health.last_sample[1]
        if self.plan is not None and name in self.plan.joints:
            self._drop_from_plan(name)
        self._event(f"{name}: {reason}; backing off to the present position and holding")

    def _drop_from_plan(self, name: str) -> None:
        plan = self.plan
        index = plan.joints.index(name)
        if len(plan.joints) == 1:
            self.plan = None
            return
        plan.joints.pop(index)
        for point in plan.points:
            point.pop(index)

    def _write_goals(self, now: float, fresh: Mapping[str, float]) -> dict[str, float]:
        """Move each goal by :func:`next_goal` and write the ones that changed; returns every goal held."""
        targets = self._current_targets(now)
        for name, health in self.health.items():
            if health.backed_off:
                targets[name] = self.targets[name]
        if self.plan is not None and now >= self.plan.end_time:
            self.targets |= targets  # the plan ran out: hold its last point
            self.plan = None
        changed = {}
        for name, joint in self.joints.items():
            if name not in fresh:  # a joint that did not answer gets no new motion: where is it?
                continue
            goal = next_goal(
                self.goals[name],
                targets[name],
                fresh[name],
                joint.lower,
                joint.upper,
                self.step_per_cycle,
                self.safety.max_step,
            )
            if goal is None:
                continue
            if joint.to_raw(goal) != joint.to_raw(self.goals[name]):
                changed[joint.servo_id] = joint.to_raw(goal)
            self.goals[name] = goal
        if changed:
            self.bus.sync_write_register("Goal_Position", changed)
        return dict(self.goals)

    # -------------------------------------------------------------------------------------- diagnostics
    def reports(self, prefix: str = "arm") -> list[StatusReport]:
        with self._lock:
            bus = self.bus_report(prefix)
            bus.values["torque_enabled"] = str(self.state == ArmState.ENABLED)
            bus.values["rejected_commands"] = str(self.rejected_commands)
            bus.values["last_rejection"] = self.last_rejection
            if self.last_rejection and bus.level == 0:
                bus = StatusReport(bus.name, 1, "last command rejected: " + self.last_rejection, bus.values)
            return [bus, *self.servo_reports(prefix)]


class LeaderArm(ArmLink):
    """Leader arm: torque stays off; positions are read and converted with the leader's calibration."""

    def _on_connected(self, now: float) -> None:
        for servo_id in self.ids:  # acknowledged: a leader must be limp to be moved by hand
            self.bus.write_register(servo_id, "Torque_Enable", 0)

    def step(self) -> CycleResult:
        """Read the leader once; positions are None unless every joint answered and calibration matches."""
        with self._lock:
            self.cycles += 1
            if self.state == ArmState.DISCONNECTED and not self.maybe_reconnect():
                return CycleResult(self.state, None, None, None, None, tuple(self.joints))
            try:
                fresh = self._read_positions()
                if self.cycles % 10 == 0:
                    self._read_next_telemetry()
            except BusDisconnectedError as exc:
                self._lost(exc)
                return CycleResult(self.state, None, None, None, None, tuple(self.joints))
            missing = tuple(n for n in self.joints if n not in fresh)
            usable = not missing and not self.calibration_problems
            return CycleResult(
                state=self.state,
                positions=fresh if usable else None,
                velocities={n: self.health[n].velocity for n in self.joints} if usable else None,
                efforts=None,
                goals=None,
                missing=missing,
            )

    def reports(self, prefix: str = "leader") -> list[StatusReport]:
        with self._lock:
            return [self.bus_report(prefix), *self.servo_reports(prefix)]
