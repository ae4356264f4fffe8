"""The leader arm: read by hand-guiding, torque always off (ROS-free)."""

from __future__ import annotations

from so100_driver.arm.link import ArmLink, ArmState, CycleResult, StatusReport
from so100_driver.bus import BusDisconnectedError


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
