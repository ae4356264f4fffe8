"""The follower arm: torque management, protection and goals (ROS-free).

Units: joint positions in radians, zero at the middle of each joint's calibrated range (LeRobot's degree
mode). Trajectory time (``now``) is whatever clock the caller uses (the node's ROS clock, so
``use_sim_time`` works); protection timers (overload, silence, reconnect) run on the monotonic clock
because they are about physics, not about the plan.

One control cycle (:meth:`ArmController.step`):

1. sync read of every Present_Position (+ the status byte of each reply);
2. one servo's telemetry block (torque and goal read back, velocity, load, voltage, temperature, status,
   current), round-robin;
3. protection: overload/heat/stall back the joint off to where it is and hold, a hard limit, a silent
   servo or a servo that dropped its torque disables torque;
4. target = the active trajectory sampled at ``now`` (or the held target), clamped to the calibrated range;
5. goal = :func:`~so100_driver.arm.safety.next_goal`: towards the target by at most ``max_velocity`` per
   second, always within ``max_step`` of the measured position, never outside the range; one sync write of
   the goals that changed.

The arm-safety rule: after any interruption (torque enabled again, reconnect, fault, restart) the arm
holds where it physically is, and moves only on a command stamped after that torque-on (its *epoch*).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

from smolvla_common.calibration import RESOLUTION_DIVISOR
from so100_driver import protocol
from so100_driver.arm.commands import JointTargets, TrajectoryPlan
from so100_driver.arm.joint import Joint
from so100_driver.arm.link import ArmLink, ArmState, CycleResult, JointHealth, StatusReport
from so100_driver.arm.safety import FATAL_BITS, SERVO_SETTINGS, STRESS_BITS, SafetyConfig, next_goal
from so100_driver.bus import BusDisconnectedError, BusError, FeetechBus, Telemetry


class ArmController(ArmLink):
    """Follower arm: targets from trajectories, protection, torque management."""

    CALIBRATION_SETTING = "smolvla-run: --calibration-file FILE; " + ArmLink.CALIBRATION_SETTING

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
        self.commands = JointTargets(self.joints)
        self.goals: dict[str, float] = {}  # what each servo holds (as written, or as read back)
        self.resume_torque = False
        self.enable_failed_on_bus = False  # the last torque-on was refused only for a failed bus transfer
        self.epoch = 0  # number of torque-ons so far
        self.enabled_since: float | None = None  # trajectory-clock time of the latest torque-on
        self.goal_readback_mismatches = 0

    @property
    def targets(self) -> dict[str, float]:
        """The targets held (a running trajectory not included)."""
        return self.commands.targets

    @property
    def plan(self) -> TrajectoryPlan | None:
        return self.commands.plan

    @property
    def rejected_commands(self) -> int:
        return self.commands.rejected

    @property
    def last_rejection(self) -> str:
        return self.commands.last_rejection

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
        agree, or a joint farther than ``max_step`` outside its calibrated range. After a refusal,
        :attr:`enable_failed_on_bus` tells whether only the bus was at fault (worth asking again).
        """
        with self._lock:
            self.enable_failed_on_bus = False
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
                self.enable_failed_on_bus = True
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
            self.enable_failed_on_bus = True
            return None, f"no position from {missing}"
        steps_per_rad = RESOLUTION_DIVISOR / (2 * math.pi)
        tolerance = max(2.0, self.safety.max_step * steps_per_rad)
        moving = [
            f"{n} ({abs(second[n] - first[n]) * steps_per_rad:.0f} steps)"
            for n in self.joints
            if abs(second[n] - first[n]) * steps_per_rad > tolerance
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
            self.enable_failed_on_bus = True
            return False, f"torque enable failed, torque disabled again: {exc}"
        self.goals = {name: self.joints[name].to_rad(raw) for name, raw in hold.items()}
        for health in self.health.values():
            health.backed_off, health.stressed_since, health.calm_since = False, None, None
        self.fault_message = ""
        self.resume_torque = True
        self.state = ArmState.ENABLED
        self.epoch += 1
        self.enabled_since = now
        self.commands.hold(self.goals, enabled_since=now)
        return True, "torque enabled, holding the measured position"

    def disable_torque(self) -> tuple[bool, str]:
        """Torque off (the arm goes limp). Clears a FAULT."""
        with self._lock:
            self.resume_torque = False
            self.commands.plan = None
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
        self.commands.plan = None
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
            self.commands.reject(reason)

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
            not_enabled = ""
            if self.state != ArmState.ENABLED:
                not_enabled = (
                    f"arm is {self.state.value}: enable torque first (std_srvs/SetBool, torque service)"
                    + (f"; fault: {self.fault_message}" if self.fault_message else "")
                )
            self.commands.command(now, names, points, start_time, not_enabled)

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
                self.commands.plan = None
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
        here = health.last_sample[1] if health.last_sample is not None else self.targets[name]
        self.commands.hold_joint(name, here)
        self._event(f"{name}: {reason}; backing off to the present position and holding")

    def _write_goals(self, now: float, fresh: Mapping[str, float]) -> dict[str, float]:
        """Move each goal by :func:`next_goal` and write the ones that changed; returns every goal held."""
        # a backed-off joint holds where it stopped, whatever a command says
        held = {name: self.targets[name] for name, health in self.health.items() if health.backed_off}
        targets = self.commands.sample(now) | held
        self.commands.settle(now)
        self.commands.targets |= held
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
