"""Simulated SO-101 rendering figures: frames per second per camera while physics runs in real time.

For each image size and mesh setting (decimated vs the original 322k-triangle meshes) this runs the real
simulation runtime (physics thread paced to the wall clock + one render thread per camera, top and wrist)
and prints, per camera, the frames rendered per second and the mean render time, plus the realtime
factor physics achieved meanwhile. Two modes:

- ``max``: cameras asked for more frames than they can render, so the figure is the sustainable fps;
- ``target``: cameras at ``--fps`` (what the sim node would be configured with): delivered fps and
  skipped frames show whether that setting holds.

    python benchmarks/bench_sim.py [--seconds 5] [--fps 30] [--sizes 256x256 480x640] [--keep 0.3 1.0]

The project target: at least 10 fps per camera at 256x256 with both cameras and real-time physics on
2 CPU cores. Figures depend on the machine's load, printed alongside.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np

import so100_driver.sim  # noqa: F401  (selects the headless GL backend before mujoco is imported)
from so100_driver.sim.arm import SimArm
from so100_driver.sim.runtime import SimRuntime
from so100_driver.sim.scene import SceneConfig, SimCamera, build_model

CAMERAS = ("top", "wrist")


def waving_command(sim_time: float) -> np.ndarray:
    """A slow joint-space wave so every frame shows a different pose."""
    phase = 2.0 * np.pi * 0.25 * sim_time
    return np.array([0.8 * np.sin(phase), -0.5 + 0.4 * np.cos(phase), 0.6 * np.sin(phase), 0.5, 0.0, 0.6])


def run_case(width: int, height: int, keep: float, fps: float, seconds: float) -> dict:
    cameras = tuple(SimCamera(name, width, height) for name in (CAMERAS if fps > 0 else ()))
    started = time.perf_counter()
    model = build_model(SceneConfig(cameras=cameras, mesh_keep_fraction=keep))
    build_s = time.perf_counter() - started
    arm = SimArm(model)
    lock = threading.Lock()
    frames = dict.fromkeys(CAMERAS, 0)

    def on_frame(name: str, sim_time: float, image: np.ndarray) -> None:
        with lock:
            frames[name] += 1

    runtime = SimRuntime(
        arm,
        cameras,
        camera_fps=fps,
        now=time.monotonic,
        command_for=waving_command,
        on_state=lambda state: None,
        on_frame=on_frame,
    )
    runtime.start()
    time.sleep(1.0)  # warm-up: first frames, caches
    with lock:
        start_frames = dict(frames)
    start_wall, start_sim, start_cpu = time.monotonic(), arm.time, time.process_time()
    time.sleep(seconds)
    with lock:
        end_frames = dict(frames)
    wall, sim = time.monotonic() - start_wall, arm.time - start_sim
    cpu = time.process_time() - start_cpu
    stats = {name: stream.stats for name, stream in runtime.stats.cameras.items()}
    runtime.stop()
    rendered = sum(end_frames[name] - start_frames[name] for name in CAMERAS)
    return {
        "build_s": build_s,
        "cpu_cores": cpu / wall,  # CPU seconds this process used per wall second (physics + rendering)
        "cpu_ms_per_frame": cpu / rendered * 1e3 if rendered else float("nan"),
        "triangles": int(model.mesh_facenum.sum()),
        "fps": {name: (end_frames[name] - start_frames[name]) / wall for name in CAMERAS},
        "render_ms": {name: stats[name].render_seconds * 1e3 for name in stats},
        "skipped": {name: stats[name].skipped for name in stats},
        "realtime_factor": sim / wall,
        "lag_resets": runtime.stats.lag_resets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement time per case")
    parser.add_argument("--fps", type=float, default=30.0, help="camera rate for the 'target' mode")
    parser.add_argument("--sizes", nargs="+", default=["256x256", "480x640"], help="HEIGHTxWIDTH")
    parser.add_argument("--keep", nargs="+", type=float, default=[0.3, 1.0], help="mesh keep fractions")
    args = parser.parse_args()

    print(
        f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}  cpus={os.cpu_count()}  "
        f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    print(
        "cameras: top + wrist, one render thread each; physics paced to the wall clock (100 Hz control); "
        f"LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS')}"
    )
    physics = run_case(256, 256, 0.3, 0.0, args.seconds)
    physics_cores = physics["cpu_cores"]
    print(
        f"physics alone (arm + cube, real time): RTF {physics['realtime_factor']:.2f}, "
        f"{physics_cores * 100:.0f}% of one core"
    )
    print(
        "fps: frames per wall second per camera; ms: wall time of one render;\n"
        "CPU ms/frame: process CPU time per rendered frame, physics share removed (robust to other load);\n"
        "est. fps: per camera, both cameras sharing 2 idle cores = (2 - physics cores) / (2 x CPU s/frame)"
    )
    header = (
        f"{'size':>8} {'meshes':>10} {'mode':>7} | {'top fps':>7} {'ms':>6} | {'wrist fps':>9} {'ms':>6} |"
        f" {'skipped':>7} | {'RTF':>4} {'resets':>6} | {'CPU ms/frame':>12} {'est. fps':>8}"
    )
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        height, width = (int(v) for v in size.lower().split("x"))
        for keep in args.keep:
            for mode, fps in (("max", 1000.0), (f"{args.fps:g} fps", args.fps)):
                r = run_case(width, height, keep, fps, args.seconds)
                rendered = sum(r["fps"].values()) * args.seconds
                render_cpu_ms = (r["cpu_cores"] - physics_cores) * args.seconds / rendered * 1e3
                estimate = (2.0 - physics_cores) / (2.0 * render_cpu_ms / 1e3)
                meshes = f"{r['triangles'] / 1000:.0f}k tris"
                skipped = "-" if mode == "max" else str(sum(r["skipped"].values()))
                print(
                    f"{size:>8} {meshes:>10} {mode:>7} |"
                    f" {r['fps']['top']:7.1f} {r['render_ms']['top']:6.1f} |"
                    f" {r['fps']['wrist']:9.1f} {r['render_ms']['wrist']:6.1f} | {skipped:>7} |"
                    f" {r['realtime_factor']:4.2f} {r['lag_resets']:6d} |"
                    f" {render_cpu_ms:12.1f} {estimate:8.1f}",
                    flush=True,
                )
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
