"""The connection to an arm's servo bus shared by follower and leader: startup checks, position and
telemetry reads, reconnection and diagnostics."""

from __future__ import annotations

import enum
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from smolvla_common.calibration import ArmCalibration, MotorCalibration
from so100_driver import protocol
from so100_driver.arm.joint import Joint
from so100_driver.arm.safety import FATAL_BITS, STRESS_BITS, SafetyConfig
from so100_driver.bus import BusDisconnectedError, BusError, BusPortBusyError, FeetechBus, Telemetry
from so100_driver.servo_calibration import EEPROM_REGISTERS, compare_with_servos


class ArmState(enum.Enum):
    DISCONNECTED = "disconnected"  # port closed / device gone / servos missing: retrying
    IDLE = "idle"  # connected, torque off
    ENABLED = "enabled"  # torque on, following targets
    FAULT = "fault"  # unrecoverable fault: torque disabled, waits for an explicit torque-on


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

    #: how each way of starting the node sets its calibration file (the leader has no runner flag)
    CALIBRATION_SETTING = "ros2 launch: calibration_file:=FILE; ros2 run: -p calibration_file:=FILE"

    def calibration_fix_hint(self) -> str:
        return (
            "Fix: write the file to the servos (`so100-calibrate --port PORT --file FILE --write-only`), "
            "recalibrate (`so100-calibrate --port PORT --file FILE`), or give the file that belongs to this "
            f"arm in the parameter calibration_file ({self.CALIBRATION_SETTING})."
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
