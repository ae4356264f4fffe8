"""Real-time pacing of the simulation and its camera threads (ROS-free).

The physics thread advances the simulation so that simulated time follows a pacing clock (the node's
clock) times ``realtime_factor``, one control period at a time. It reports the arm state every
``1/state_rate`` seconds of simulated time. Each camera renders on its own thread from snapshots.
If the machine cannot keep up for more than ``max_lag`` seconds, the simulation drops the backlog
(counted in ``lag_resets``) instead of running in fast-forward to catch up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from so100_driver.sim.arm import SimArm, SimSnapshot
from so100_driver.sim.render import CameraStream, RenderError
from so100_driver.sim.scene import SimCamera


@dataclass
class RuntimeStats:
    lag_resets: int = 0
    callback_errors: int = 0
    last_error: str = ""
    achieved_realtime_factor: float = 0.0
    cameras: dict[str, CameraStream] = field(default_factory=dict)


class SimRuntime:
    def __init__(
        self,
        arm: SimArm,
        cameras: Sequence[SimCamera],
        camera_fps: float,
        now: Callable[[], float],
        command_for: Callable[[float], np.ndarray | None],
        on_state: Callable[[SimSnapshot], None],
        on_frame: Callable[[str, float, np.ndarray], None],
        on_tick: Callable[[float], None] | None = None,
        state_rate: float = 100.0,
        realtime_factor: float = 1.0,
        loop_period: float = 0.004,
        max_lag: float = 0.25,
    ):
        """``now()`` is the pacing clock in seconds; ``command_for(sim_time)`` the requested joint goal."""
        if not 0.0 < realtime_factor <= 100.0:
            raise ValueError(f"realtime_factor must be in (0, 100], got {realtime_factor}")
        if not 0.0 < state_rate <= 1000.0:
            raise ValueError(f"state_rate must be in (0, 1000] Hz, got {state_rate}")
        self.arm = arm
        self.realtime_factor = realtime_factor
        self.stats = RuntimeStats()
        self._now = now
        self._command_for = command_for
        self._on_state = on_state
        self._on_tick = on_tick
        self._state_period = 1.0 / state_rate
        self._loop_period = loop_period
        self._max_lag = max_lag
        self._epoch = 0.0
        self._stop_event = threading.Event()
        self._advanced = threading.Condition()
        self._physics = threading.Thread(target=self._physics_loop, name="sim-physics", daemon=True)
        self._streams = [
            CameraStream(arm.model, camera, camera_fps, self._wait_for_time, self._snapshot, on_frame)
            for camera in cameras
        ]
        self.stats.cameras = {stream.camera.name: stream for stream in self._streams}

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self, renderer_timeout: float = 30.0) -> None:
        """Start physics and cameras; raises :class:`RenderError` if a camera cannot render."""
        for stream in self._streams:
            stream.start()
        for stream in self._streams:
            if not stream.ready.wait(renderer_timeout):
                stream.stats.error = (
                    f"camera '{stream.camera.name}': no renderer after {renderer_timeout:.0f} s"
                )
            if stream.stats.error:
                self.stop()
                raise RenderError(stream.stats.error)
        self._epoch = self._now() - self.arm.time / self.realtime_factor
        self._physics.start()

    def stop(self) -> None:
        self._stop_event.set()
        for stream in self._streams:
            stream.stop()
        with self._advanced:
            self._advanced.notify_all()
        for thread in [self._physics, *self._streams]:
            if thread.is_alive():
                thread.join(timeout=5.0)

    @property
    def running(self) -> bool:
        return self._physics.is_alive()

    def pacing_time(self, sim_time: float) -> float:
        """The pacing-clock time (seconds) at which the simulation shows ``sim_time``."""
        return self._epoch + sim_time / self.realtime_factor

    # --- threads ---------------------------------------------------------------------------------
    def _snapshot(self) -> tuple[float, np.ndarray]:
        state = self.arm.state()
        return state.time, state.qpos

    def _wait_for_time(self, sim_time: float) -> bool:
        with self._advanced:
            self._advanced.wait_for(
                lambda: self.arm.time >= sim_time or self._stop_event.is_set(), timeout=0.5
            )
        return self.arm.time >= sim_time and not self._stop_event.is_set()

    def _physics_loop(self) -> None:
        arm = self.arm
        next_state_time = arm.time
        window_start = (time.monotonic(), arm.time)
        while not self._stop_event.is_set():
            now = self._now()
            target = (now - self._epoch) * self.realtime_factor
            if target - arm.time > self._max_lag * self.realtime_factor or target < arm.time - 1.0:
                # Starved of CPU, or the clock jumped: re-anchor instead of fast-forwarding.
                self._epoch = now - arm.time / self.realtime_factor
                self.stats.lag_resets += 1
                target = arm.time
            while arm.time + 0.5 * arm.control_period <= target and not self._stop_event.is_set():
                self._control_once()
                if arm.time + 1e-9 >= next_state_time:
                    self._guarded(lambda: self._on_state(arm.state()))
                    next_state_time = max(next_state_time + self._state_period, arm.time - self._state_period)
            with self._advanced:
                self._advanced.notify_all()
            if self._on_tick is not None:
                self._guarded(lambda: self._on_tick(arm.time))
            wall = time.monotonic()
            if wall - window_start[0] >= 1.0:
                self.stats.achieved_realtime_factor = (arm.time - window_start[1]) / (wall - window_start[0])
                window_start = (wall, arm.time)
            self._stop_event.wait(self._loop_period)

    def _control_once(self) -> None:
        try:
            requested = self._command_for(self.arm.time)
            self.arm.control_step(requested)
        except Exception as error:  # a bad request holds the goal; time must advance regardless
            self.stats.callback_errors += 1
            self.stats.last_error = f"command rejected: {error}"
            self.arm.control_step(None)

    def _guarded(self, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as error:  # a failing callback must not stop the physics
            self.stats.callback_errors += 1
            self.stats.last_error = repr(error)
