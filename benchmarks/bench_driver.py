"""Servo bus control-cycle benchmark on the STS3215 emulator (real scservo_sdk over a real pty).

Measures, paced at ``--rate`` Hz for ``--seconds``:

* ``bus``: one sync read of 6 Present_Position + one sync write of 6 Goal_Position per cycle (the target:
  >= 100 Hz sustained, p99 cycle time < 10 ms);
* ``controller``: a full :meth:`ArmController.step` (sync read, one round-robin telemetry read, safety,
  trajectory sampling, sync write) with torque on and a moving trajectory.

By default the emulator runs in its own process (``python -m so100_driver.emulator``), as a real bus would
be outside the driver's process; ``--in-process`` runs it on a thread instead (shares the GIL: slower).

    python benchmarks/bench_driver.py [--rate 100] [--seconds 10] [--in-process] [--timing]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from so100_driver.arm import ArmController, Joint, SafetyConfig
from so100_driver.bus import FeetechBus
from so100_driver.emulator.bus_emulator import BusEmulator
from so100_driver.emulator.presets import preset_motors

IDS = [1, 2, 3, 4, 5, 6]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100.0 * len(ordered)) - 1))
    return ordered[index]


def paced(rate: float, seconds: float, body) -> tuple[list[float], float, float]:
    """Run ``body()`` at ``rate`` Hz for ``seconds``; returns cycle times (s), the achieved rate and this
    process's CPU time per cycle (s)."""
    period = 1.0 / rate
    times = []
    cpu_start = time.process_time()
    start = next_cycle = time.perf_counter()
    while (now := time.perf_counter()) - start < seconds:
        body()
        times.append(time.perf_counter() - now)
        next_cycle += period
        delay = next_cycle - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        elif delay < -period:
            next_cycle = time.perf_counter()
    return times, len(times) / (time.perf_counter() - start), (time.process_time() - cpu_start) / len(times)


def report(name: str, times: list[float], rate: float, cpu: float, target_rate: float, errors: dict) -> bool:
    ms = [t * 1000.0 for t in times]
    p99 = percentile(ms, 99)
    ok = rate >= 0.98 * target_rate and p99 < 10.0
    print(
        f"{name:<11} cycles={len(ms):6d}  rate={rate:7.1f} Hz (target {target_rate:.0f})  "
        f"cycle ms: min={min(ms):.3f} median={statistics.median(ms):.3f} p99={p99:.3f} max={max(ms):.3f}  "
        f"cpu={cpu * 1000.0:.2f} ms/cycle  "
        f"{'OK' if ok else 'MISSED'}"
    )
    print(f"{'':<11} errors: " + ", ".join(f"{k}={v}" for k, v in errors.items()))
    return ok


def start_emulator(args, workdir: Path):
    if args.in_process:
        emu = BusEmulator(preset="so101_follower", simulate_timing=args.timing)
        emu.faults.split_replies(args.split_replies or None, gap_s=args.split_gap_ms / 1000.0)
        return emu, None
    link = workdir / "bus"
    cmd = [sys.executable, "-m", "so100_driver.emulator", "--link", str(link), "--preset", "so101_follower"]
    cmd += ["--split-replies", str(args.split_replies), "--split-gap-ms", str(args.split_gap_ms)]
    if args.timing:
        cmd.append("--timing")
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not link.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(
                f"emulator did not start: {process.stderr.read().decode() if process.stderr else ''}"
            )
        time.sleep(0.05)
    return None, (process, str(link))


def set_realtime(pids: list[int]) -> str:
    try:
        for pid in pids:  # every thread of the process (the emulator answers from a thread)
            for task in Path(f"/proc/{pid or os.getpid()}/task").iterdir():
                os.sched_setscheduler(int(task.name), os.SCHED_FIFO, os.sched_param(50))
    except (PermissionError, OSError, AttributeError) as exc:
        return f"normal (SCHED_FIFO refused: {exc})"
    return "SCHED_FIFO 50"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="control rate to sustain (Hz)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each measurement")
    parser.add_argument("--in-process", action="store_true", help="emulator on a thread of this process")
    parser.add_argument("--timing", action="store_true", help="emulate 1 Mbaud wire time and return delay")
    parser.add_argument("--timeout-ms", type=float, default=20.0, help="bus reply timeout")
    parser.add_argument(
        "--split-replies",
        type=int,
        default=0,
        metavar="BYTES",
        help="the emulator delivers replies in USB packets of BYTES, --split-gap-ms apart (0: whole)",
    )
    parser.add_argument("--split-gap-ms", type=float, default=2.0)
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="run this process and the emulator with SCHED_FIFO priority (as a robot's control loop "
        "would be; needs root or CAP_SYS_NICE) to measure the driver rather than the scheduler's fairness",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_driver_") as tmp:
        emu, external = start_emulator(args, Path(tmp))
        port = emu.port if emu else external[1]
        scheduling = "normal"
        if args.realtime:
            scheduling = set_realtime([0] + ([external[0].pid] if external else []))
        replies = (
            f"in {args.split_replies}-byte packets {args.split_gap_ms} ms apart"
            if args.split_replies
            else "whole"
        )
        print(
            f"emulator: {'in-process thread' if emu else 'separate process'}, wire timing "
            f"{'on' if args.timing else 'off'}; replies {replies}; scheduling {scheduling}; "
            f"cpus={os.cpu_count()} "
            f"loadavg={os.getloadavg()[0]:.2f}"
        )
        try:
            ok = run(args, port)
        finally:
            if emu:
                emu.stop()
            else:
                external[0].terminate()
                external[0].wait(timeout=10)
    return 0 if ok else 1


def run(args, port: str) -> bool:
    bus = FeetechBus(port, timeout_ms=args.timeout_ms, retries=2)
    bus.open()
    goals = bus.read_register(IDS, "Present_Position").values
    stale_cycles = 0

    def bus_cycle():
        nonlocal stale_cycles
        read = bus.read_register(IDS, "Present_Position")
        stale_cycles += bool(read.missing)
        bus.sync_write_register("Goal_Position", goals)

    times, rate, cpu = paced(args.rate, args.seconds, bus_cycle)
    stats = bus.stats.snapshot()
    ok = report("bus", times, rate, cpu, args.rate, {"incomplete_cycles": stale_cycles, **_errors(stats)})
    bus.close()

    joints = [
        Joint(m.name, m.motor_id, m.range_min, m.range_max, m.homing_offset, is_gripper=m.name == "gripper")
        for m in preset_motors("so101_follower")
    ]
    controller = ArmController(
        FeetechBus(port, timeout_ms=args.timeout_ms, retries=2), joints, SafetyConfig()
    )
    t0 = time.perf_counter()
    if not any(controller.connect(time.perf_counter() - t0) for _ in range(5)):
        raise SystemExit(f"controller could not connect: {controller.connect_error}")
    ok_torque, message = controller.enable_torque(time.perf_counter() - t0)
    if not ok_torque:
        raise SystemExit(message)
    start_goals = dict(controller.goals)

    def controller_cycle():
        now = time.perf_counter() - t0
        if controller.plan is None:  # keep the arm moving: a 1 s sine-ish sweep on every body joint
            amplitude = 0.3 if int(now) % 2 == 0 else -0.3
            names = [n for n in start_goals if n != "gripper"]
            controller.command(now, names, [(1.0, [start_goals[n] + amplitude for n in names])], now)
        controller.step(now)

    times, rate, cpu = paced(args.rate, args.seconds, controller_cycle)
    stats = controller.bus.stats.snapshot()
    state = {"state": controller.state.value}
    ok &= report("controller", times, rate, cpu, args.rate, {**state, **_errors(stats)})
    controller.shutdown()
    return ok


def _errors(stats: dict) -> dict:
    keys = ("transactions", "retries", "timeouts", "corrupt", "duplicates", "flushes", "failed_transactions")
    return {k: stats[k] for k in keys}


if __name__ == "__main__":
    sys.exit(main())
