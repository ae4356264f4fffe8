"""`make demo`: the whole SmolVLA pipeline in simulation, with live progress, a summary and a report folder.

It starts the ``sim`` graph (MuJoCo SO-101 with its cameras, policy, executor) through the same
:class:`~smolvla_bringup.runner.Runner` and YAML files as ``smolvla-run sim`` and, once the model is
loaded, makes attempts at the pick-up task for ``--duration`` seconds: each attempt sends the arm home,
puts the cube at the next held-out placement (task seeds >= 1000, never recorded for training), gives the
instruction and starts the executor, and ends at success (the cube held 3 cm up for 1 s, from the
simulator's state) or after ``--attempt-timeout`` seconds. It writes ``reports/demo-<timestamp>/``:
``summary.json`` (the attempts, their outcome and time to success), a picture of each success
(``success_<n>.png``, the cameras side by side; each also as ``camera_<name>_success_<n>.png``), camera
frames at the start and the end, ``trajectories.png`` (executed vs
predicted joint trajectories) and the exact parameter file used.

The model: ``--checkpoint`` when given; else the repository's ``checkpoints/sim-pick-cube`` (a small SmolVLA
trained on this task with ``make collect`` and ``make train``); else ``lerobot/smolvla_base`` when the hub
(or the local hub cache) has it; else a random-weight model of the same architecture, generated once into
the cache folder and announced as UNTRAINED. ``--tiny`` uses a tiny random model (seconds instead of
minutes; what the tests run) and ``--random`` the real-size random one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

from smolvla_bringup.demo.closed_loop import (
    HOME_S,
    EpisodeResult,
    RowSpec,
    ScorerNode,
    run_episode,
    wait_until,
)
from smolvla_bringup.demo.model import UNTRAINED_BANNER, choose_model, demo_parameters
from smolvla_bringup.demo.probe import DemoProbe
from smolvla_bringup.demo.report import (
    motion_ranges,
    plot_trajectories,
    print_summary,
    save_frames,
    save_montage,
    summarize,
)

ATTEMPT_TIMEOUT_S = 15.0


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="", help="SmolVLA checkpoint folder or hub repo id to run")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model: fast, for a quick look")
    parser.add_argument(
        "--random", action="store_true", help="the random real-size model (not the trained one, not the hub)"
    )
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of attempts after loading")
    parser.add_argument(
        "--attempt-timeout",
        type=float,
        help="seconds an attempt may take before it failed (default 15: the trained checkpoint's successes "
        "take 6-11 s; the whole --duration for a real-size model on a CPU, seconds per chunk)",
    )
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
        "--report-dir", type=Path, default=Path("reports"), help="parent of the report folder"
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or (args.attempt_timeout is not None and args.attempt_timeout <= 0):
        parser.error("--duration and --attempt-timeout must be > 0 (seconds)")
    return args


def _progress(rec, t0: float, duration: float, live: bool, attempt: int) -> None:
    with rec.lock:
        status, chunks = rec.data.executor, list(rec.data.chunks)
        states = list(rec.data.joint_states)
    now = rec.now()
    latency = f"{chunks[-1]['latency']:.2f} s" if chunks else "-"
    moved = max(motion_ranges([s for s in states if s[0] >= t0]).values())
    line = (
        f"[{now - t0:5.1f}/{duration:.0f} s] attempt {attempt} | "
        f"chunks {len(chunks):3d} (latency {latency}) | "
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


def drive(probe: DemoProbe, scorer: ScorerNode, sim, args, cameras: list[str], report: Path):
    """Attempts at the task until ``--duration`` is spent; returns the start time, the camera frames at the
    start and the attempts (``EpisodeResult`` fields, plus the frames saved at a success)."""
    wait_until(lambda: len(probe.data.frames) >= len(cameras), 10.0, 0.1)  # a count: nothing decoded
    frames_start = probe.snapshot_frames()
    t0 = probe.now()
    end = time.monotonic() + args.duration
    live = sys.stdout.isatty()
    attempts: list[dict] = []
    next_print = [time.monotonic()]

    def tick() -> None:
        if time.monotonic() >= next_print[0]:
            _progress(probe, t0, args.duration, live, len(attempts) + 1)
            next_print[0] += 1.0 if live else 5.0

    try:
        # an attempt needs the homing time and a few seconds of policy to be worth starting
        while (left := end - time.monotonic() - HOME_S - 0.5) > min(5.0, args.attempt_timeout):
            result = run_episode(
                RowSpec("policy"),
                scorer,
                sim,
                None,
                min(args.attempt_timeout, left),
                instruction=args.instruction,
                on_tick=tick,
            )
            attempts.append(record_attempt(result, probe.snapshot_frames(), report, len(attempts) + 1))
            outcome = f"SUCCESS after {result.time_to_success_s:.1f} s" if result.success else "no success"
            line_break = "\n" if live else ""  # ends the live progress line
            print(f"{line_break}demo: attempt {len(attempts)} ({result.placement}): {outcome}", flush=True)
    except KeyboardInterrupt:
        print("\ndemo: interrupted, writing the report of what ran", flush=True)
    except RuntimeError as err:  # a service of the graph did not answer: report what ran
        print(f"\ndemo: attempts stopped: {err}", file=sys.stderr, flush=True)
    finally:
        with contextlib.suppress(RuntimeError):  # the arm holds while the report is written
            scorer.call("executor/stop", timeout=2.0)
    return t0, frames_start, attempts


def record_attempt(result: EpisodeResult, frames: dict, report: Path, number: int) -> dict:
    """The attempt's entry of the report; a success's camera frames are saved, and side by side as its
    picture (``success_<n>.png``)."""
    attempt = {"attempt": number, **asdict(result)}
    if result.success and frames:
        attempt["frames"] = save_frames(frames, report, f"success_{number}")
        attempt["picture"] = save_montage(frames, report / f"success_{number}.png")
    return attempt


def write_report(
    probe: DemoProbe,
    report: Path,
    t0: float,
    frames_start: dict,
    attempts: list[dict],
    model,
    load_s: float,
    args,
) -> dict:
    t_end = probe.now()
    frames_end = probe.snapshot_frames()
    with probe.lock:  # a copy: the probe keeps recording until the graph stops
        d = probe.data
        data = replace(d, joint_states=list(d.joint_states), commands=list(d.commands), chunks=list(d.chunks))
        summary = summarize(data, t0, t_end, model, load_s)
    summary["instruction"] = args.instruction
    summary["attempt_timeout_s"] = args.attempt_timeout
    summary["attempts"] = attempts
    summary["successes"] = sum(a["success"] for a in attempts)
    summary["frames"] = save_frames(frames_start, report, "start") + save_frames(frames_end, report, "end")
    summary["plot"] = "trajectories.png"
    plot_trajectories(data, t0, t_end, report / "trajectories.png")
    (report / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run(args) -> int:
    import yaml

    from smolvla_bringup import graph
    from smolvla_bringup.runner import Runner
    from so100_driver.sim_node import SimArmNode

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
    if args.attempt_timeout is None:
        slow = model.real_size and params["/**/policy"]["ros__parameters"]["device"] == "cpu"
        args.attempt_timeout = args.duration if slow else ATTEMPT_TIMEOUT_S
    params_file = report / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    cameras = params["/**/arm"]["ros__parameters"]["cameras"]
    files, specs = graph.graph("sim")
    runner = Runner(specs, [*files, params_file])
    print(f"demo: starting the sim graph (as `smolvla-run sim --params {params_file}`) ...", flush=True)
    started = time.monotonic()
    runner.start()
    probe = DemoProbe(runner.context, cameras)
    runner.add_node(probe)
    scorer = ScorerNode(runner.context)
    runner.add_node(scorer)
    sim = next(n for n in runner.nodes if isinstance(n, SimArmNode))
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
        t0, frames_start, attempts = drive(probe, scorer, sim, args, cameras, report)
        summary = write_report(probe, report, t0, frames_start, attempts, model, load_s, args)
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
