"""`make demo`: the whole SmolVLA pipeline in simulation, with live progress, a summary and a report folder.

It starts the ``sim`` graph (MuJoCo SO-101 with top and wrist cameras, policy, executor) through the same
:class:`~smolvla_bringup.runner.Runner` and YAML files as ``smolvla-run sim``, waits for the model, gives the
instruction (latched on ``/instruction``, as ``smolvla-instruct`` does), runs for ``--duration`` seconds and
writes ``reports/demo-<timestamp>/``: ``summary.json``, ``trajectories.png`` (executed vs predicted joint
trajectories), camera frames and the exact parameter file used.

The model: ``--checkpoint`` when given; else ``lerobot/smolvla_base`` when the hub (or the local hub cache)
has it; else a random-weight model of the same architecture, generated once into the cache folder and
announced as UNTRAINED (its motion is meaningless; it shows the pipeline, not a skill). ``--tiny`` uses a
tiny random model instead (seconds instead of minutes; what the tests run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from smolvla_bringup.demo.model import UNTRAINED_BANNER, choose_model, demo_parameters
from smolvla_bringup.demo.probe import DemoProbe
from smolvla_bringup.demo.report import (
    motion_ranges,
    plot_trajectories,
    print_summary,
    save_frames,
    summarize,
)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="", help="SmolVLA checkpoint folder or hub repo id to run")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model: fast, for a quick look")
    parser.add_argument("--random", action="store_true", help="skip the hub: use the random real-size model")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of pipeline after loading")
    parser.add_argument("--instruction", default="pick up the red cube", help="what to ask the robot")
    parser.add_argument("--device", default="", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--dtype",
        default="",
        help="float32 | bfloat16 (default: bfloat16 for real size on a GPU or on a CPU with oneDNN bf16 "
        "kernels, else float32)",
    )
    parser.add_argument("--load-timeout", type=float, default=300.0, help="seconds to wait for the model")
    parser.add_argument(
        "--first-chunk-timeout", type=float, default=180.0, help="seconds to wait for the first chunk"
    )
    parser.add_argument(
        "--report-dir", type=Path, default=Path("reports"), help="parent of the report folder"
    )
    return parser.parse_args(argv)


def _progress(rec, t0: float, run_start: float | None, duration: float, live: bool) -> None:
    with rec.lock:
        status, chunks = rec.data.executor, list(rec.data.chunks)
        states = list(rec.data.joint_states)
    now = rec.now()
    clock = f"[{now - run_start:5.1f}/{duration:.0f} s]" if run_start else f"[waiting {now - t0:4.0f} s]"
    latency = f"{chunks[-1]['latency']:.2f} s" if chunks else "-"
    moved = max(motion_ranges([s for s in states if s[0] >= t0]).values())
    line = (
        f"{clock} chunks {len(chunks):3d} (latency {latency}) | "
        f"executed {int(status.executed_steps) if status else 0:5d} | "
        f"idle ticks {int(status.idle_ticks) if status else 0:5d} | arm moved {moved:.2f} rad"
    )
    print(("\r" + line) if live else line, end="" if live else "\n", flush=True)


def wait_for_model(probe: DemoProbe, timeout: float) -> str:
    """Wait until the policy is ready; "" then, else why it is not."""
    from smolvla_msgs.msg import PolicyStatus

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with probe.lock:
            policy = probe.data.policy
        if policy is not None and policy.state == PolicyStatus.STATE_ERROR:
            return f"the policy cannot run: {policy.message}"
        if policy is not None and policy.state in (PolicyStatus.STATE_READY, PolicyStatus.STATE_INFERRING):
            return ""
        time.sleep(0.2)
    return f"the model did not load within {timeout:.0f} s"


def drive(probe: DemoProbe, args, cameras: list[str]) -> tuple[float, dict]:
    """Give the instruction and run for ``--duration`` seconds counted from the first chunk (bounded by
    ``--first-chunk-timeout``); returns the instruction time and the camera frames at the start."""
    t0 = probe.now()
    probe.instruct()
    frames_start: dict = {}
    live = sys.stdout.isatty()
    next_print = time.monotonic()
    end = time.monotonic() + args.first_chunk_timeout + args.duration
    run_start = None
    try:
        while time.monotonic() < end:
            if run_start is None:
                with probe.lock:
                    first_chunk = bool(probe.data.chunks)
                if first_chunk:
                    end, run_start = time.monotonic() + args.duration, probe.now()
                    print(f"demo: first chunk after {probe.now() - t0:.1f} s", flush=True)
                elif time.monotonic() > end - args.duration:
                    print(
                        f"\ndemo: no chunk within {args.first_chunk_timeout:.0f} s of the instruction "
                        "(inference too slow on this machine? try ARGS=--tiny or a GPU)",
                        flush=True,
                    )
                    break
            if len(frames_start) < len(cameras):  # the first frames of every camera
                frames_start = probe.snapshot_frames()
            if time.monotonic() >= next_print:
                _progress(probe, t0, run_start, args.duration, live)
                next_print += 1.0 if live else 5.0
            time.sleep(0.05)
    except KeyboardInterrupt:
        print("\ndemo: interrupted, writing the report of what ran", flush=True)
    _progress(probe, t0, run_start, args.duration, live)
    if live:
        print()
    return t0, frames_start


def write_report(
    probe: DemoProbe, report: Path, t0: float, frames_start: dict, model, load_s: float, args
) -> dict:
    t_end = probe.now()
    frames_end = probe.snapshot_frames()
    with probe.lock:  # a copy: the probe keeps recording until the graph stops
        d = probe.data
        data = replace(d, joint_states=list(d.joint_states), commands=list(d.commands), chunks=list(d.chunks))
        summary = summarize(data, t0, t_end, model, load_s)
    summary["instruction"] = args.instruction
    summary["frames"] = save_frames(frames_start, report, "start") + save_frames(frames_end, report, "end")
    summary["plot"] = "trajectories.png"
    plot_trajectories(data, t0, t_end, report / "trajectories.png")
    (report / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run(args) -> int:
    import yaml

    from smolvla_bringup import graph
    from smolvla_bringup.runner import Runner

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # a demo stays on this machine
    os.environ.setdefault("MUJOCO_GL", "egl")
    report = Path(args.report_dir) / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    report.mkdir(parents=True, exist_ok=True)
    model = choose_model(args)
    print(
        UNTRAINED_BANNER.format(what=model.description)
        if model.untrained
        else f"demo: model {model.description}"
    )
    try:
        params = demo_parameters(model, args)
    except Exception as err:  # unreadable checkpoint, not downloadable, too many cameras: say which and why
        print(f"demo: cannot use the checkpoint {model.checkpoint}: {err}", file=sys.stderr)
        return 2
    params_file = report / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    cameras = params["/**/arm"]["ros__parameters"]["cameras"]
    files, specs = graph.graph("sim")
    runner = Runner(specs, [*files, params_file])
    print(f"demo: starting the sim graph (as `smolvla-run sim --params {params_file}`) ...", flush=True)
    started = time.monotonic()
    runner.start()
    probe = DemoProbe(runner.context, cameras, args.instruction)
    runner.add_node(probe)
    try:
        print(
            f"demo: loading the model on {params['/**/policy']['ros__parameters']['device']} ...", flush=True
        )
        problem = wait_for_model(probe, args.load_timeout)
        if problem:
            print(f"\ndemo: {problem}", file=sys.stderr)
            return 1
        load_s = time.monotonic() - started
        print(f"demo: model ready after {load_s:.0f} s; instruction: {args.instruction!r}", flush=True)
        t0, frames_start = drive(probe, args, cameras)
        summary = write_report(probe, report, t0, frames_start, model, load_s, args)
    finally:
        runner.shutdown()
    print_summary(summary, report)
    if summary["executed_steps"] == 0:
        print(
            "demo: no action was executed. Policy: "
            f"{summary['policy_message']!r}; executor: {summary['executor_message']!r}",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr)
        return 130


def exit_now_if_inferring(rc: int) -> int:
    """For scripts: a policy worker still inside a long CPU inference cannot be interrupted, and letting
    the interpreter tear down under it aborts the process; exit at once instead (the report is written)."""
    if any(t.name == "smolvla_policy_worker" and t.is_alive() for t in threading.enumerate()):
        print("demo: an inference was still running; exiting without waiting for it", flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


if __name__ == "__main__":
    sys.exit(exit_now_if_inferring(main()))
