"""Offscreen camera rendering on CPU-friendly settings, one thread per camera (ROS-free).

A MuJoCo renderer owns an OpenGL context that belongs to the thread that made it, so each
:class:`CameraStream` creates its renderer inside its own thread. Frames are rendered from a snapshot of
the joint state (a private ``MjData``), so rendering never blocks physics for longer than a copy.
The GL calls of all cameras in a process take turns (see ``_GL``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import mujoco
import numpy as np

from so100_driver.sim.gl_backend import gl_context_class, gl_help, select_gl_backend
from so100_driver.sim.scene import SimCamera

# One lock for every GL call in the process. MuJoCo's EGL module opens its process-wide display on the
# first context without a lock, and two camera threads rendering at the same moment crashed the process
# inside mjr_render (a segfault in CI, Mesa llvmpipe over EGL): contexts are made, used and freed one
# thread at a time. It caps the frame rate, not the CPU per frame (256x256 on a 2-core VM: 23 fps per
# camera instead of 31 / 49); the sim's cameras default to 15 fps.
_GL = threading.Lock()


class RenderError(RuntimeError):
    """The offscreen renderer could not be created; the text says how to fix the OpenGL setup."""


class FrameRenderer:
    """Renders one camera of ``model``; create, use and close it on the same thread."""

    def __init__(self, model: mujoco.MjModel, camera: SimCamera):
        self.camera = camera
        self._model = model
        self._data = mujoco.MjData(model)
        backend = select_gl_backend()
        try:
            with _GL:
                self._gl = gl_context_class(backend)(camera.width, camera.height)
                self._gl.make_current()
                self._context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
        except Exception as error:  # ImportError, FatalError, EGL/OSMesa errors: all mean "no GL here"
            raise RenderError(f"camera '{camera.name}': {gl_help(backend)} ({error})") from error
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        self._scene = mujoco.MjvScene(model, maxgeom=1000)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0  # shadows and reflections cost 5-10x on CPU
        self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._option = mujoco.MjvOption()
        self._view = mujoco.MjvCamera()
        self._view.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._view.fixedcamid = model.camera(camera.name).id
        self._rect = mujoco.MjrRect(0, 0, camera.width, camera.height)
        self._pixels = np.empty((camera.height, camera.width, 3), dtype=np.uint8)

    def render(self, qpos: np.ndarray) -> np.ndarray:
        """A new RGB uint8 image (height, width, 3) of the scene with the joints at ``qpos``."""
        self._data.qpos[:] = qpos
        mujoco.mj_kinematics(self._model, self._data)
        mujoco.mj_camlight(self._model, self._data)
        mujoco.mjv_updateScene(
            self._model, self._data, self._option, None, self._view, mujoco.mjtCatBit.mjCAT_ALL, self._scene
        )
        with _GL:
            self._gl.make_current()
            mujoco.mjr_render(self._rect, self._scene, self._context)
            mujoco.mjr_readPixels(self._pixels, None, self._rect, self._context)
        return np.flipud(self._pixels).copy()  # OpenGL rows run bottom-up

    def close(self) -> None:
        with _GL:
            self._context.free()
            self._gl.free()


@dataclass
class StreamStats:
    frames: int = 0
    skipped: int = 0  # frame slots missed because rendering could not keep up
    render_seconds: float = 0.0  # exponential moving average of one render
    error: str = ""


class CameraStream(threading.Thread):
    """Renders ``camera`` every ``1/fps`` seconds of simulated time and hands frames to ``on_frame``.

    ``wait_for_time(t)`` blocks until the simulation has reached time ``t`` (or returns False when
    stopping); ``snapshot()`` returns ``(sim_time, qpos)``.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        camera: SimCamera,
        fps: float,
        wait_for_time: Callable[[float], bool],
        snapshot: Callable[[], tuple[float, np.ndarray]],
        on_frame: Callable[[str, float, np.ndarray], None],
    ):
        super().__init__(name=f"sim-camera-{camera.name}", daemon=True)
        if not fps > 0.0:
            raise ValueError(f"camera '{camera.name}': fps must be > 0, got {fps}")
        self.camera = camera
        self.period = 1.0 / fps
        self.stats = StreamStats()
        self.ready = threading.Event()  # set once the renderer exists (or failed: see stats.error)
        self._model = model
        self._wait_for_time = wait_for_time
        self._snapshot = snapshot
        self._on_frame = on_frame
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        try:
            renderer = FrameRenderer(self._model, self.camera)
        except Exception as error:  # never leave start() waiting for a thread that died
            self.stats.error = (
                str(error) if isinstance(error, RenderError) else f"camera '{self.camera.name}': {error!r}"
            )
            self.ready.set()
            return
        self.ready.set()
        try:
            next_time, _ = self._snapshot()
            while not self._stop_event.is_set():
                if not self._wait_for_time(next_time):
                    continue
                sim_time, qpos = self._snapshot()
                started = time.perf_counter()
                image = renderer.render(qpos)
                elapsed = time.perf_counter() - started
                self.stats.render_seconds = (
                    elapsed if self.stats.frames == 0 else (0.9 * self.stats.render_seconds + 0.1 * elapsed)
                )
                self.stats.frames += 1
                self._on_frame(self.camera.name, sim_time, image)
                next_time += self.period
                if next_time <= sim_time:  # fell behind: skip the missed slots, never burst
                    missed = int((sim_time - next_time) // self.period) + 1
                    self.stats.skipped += missed
                    next_time += missed * self.period
        except Exception as error:  # keep the node alive; diagnostics report it
            self.stats.error = f"camera '{self.camera.name}' stopped: {error!r}"
        finally:
            renderer.close()
