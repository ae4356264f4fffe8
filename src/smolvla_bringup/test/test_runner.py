"""`smolvla-run sim` end to end: the sim bringup in its own process, an instruction from `smolvla-instruct`,
chunks executed and the simulated arm moving, progress lines in plain words, then a clean exit on Ctrl-C
(SIGINT). `smolvla-run robot` on the servo-bus emulator: the arm's torque-off at shutdown in the output, a
calibration mismatch reported once with the runner's own flag. `smolvla-run policy` with an unusable
checkpoint: exit code 1 with the policy's reason.

Everything is real: the runner process builds the nodes from the shipped YAML files (MuJoCo arm and
cameras, policy with a tiny generated checkpoint, executor, arm node on an emulated bus); this test talks
to it over DDS only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from runner_process import RunnerProcess
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from smolvla_bringup import instruct, runner
from smolvla_msgs.msg import ActionChunk, ExecutorStatus


class Watcher:
    """A probe node in its own context: records joint states, commands, chunks and executor status."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("runner_test_watcher", context=self.context)
        self.lock = threading.Lock()
        self.states: list[np.ndarray] = []
        self.commands = 0
        self.chunks = 0
        self.status: ExecutorStatus | None = None
        self.node.create_subscription(JointState, "/joint_states", self._on_state, 50)
        self.node.create_subscription(JointTrajectory, "/joint_commands", self._on_command, 50)
        self.node.create_subscription(ActionChunk, "/smolvla/action_chunk", self._on_chunk, 10)
        self.node.create_subscription(ExecutorStatus, "/smolvla/executor_status", self._on_status, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def _on_state(self, msg):
        with self.lock:
            self.states.append(np.array(msg.position))

    def _on_command(self, msg):
        with self.lock:
            self.commands += 1

    def _on_chunk(self, msg):
        with self.lock:
            self.chunks += 1

    def _on_status(self, msg):
        with self.lock:
            self.status = msg

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(self):
                    return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def close(self):
        self._stop.set()
        self.thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def watcher():
    w = Watcher()
    yield w
    w.close()


def _instruct_and_watch(watcher) -> None:
    watcher.wait_for(lambda w: len(w.states) > 20, 90, "/joint_states from the simulated arm")
    watcher.wait_for(lambda w: w.status is not None, 30, "/smolvla/executor_status")
    time.sleep(1.0)
    with watcher.lock:
        assert watcher.chunks == 0, "the policy produced chunks before any instruction was given"
        before = np.array(watcher.states[-10:])
    assert np.ptp(before, axis=0).max() < 0.01, "the arm moves before the instruction"

    assert instruct.main(["pick up the red cube", "--wait", "10", "--linger", "0.5"]) == 0

    watcher.wait_for(
        lambda w: w.status is not None and w.status.executed_steps > 30 and w.commands > 30,
        150,  # the model loads in 30-40 s on 2 busy cores while MuJoCo renders beside it
        "chunks executed (executor executed_steps and /joint_commands)",
    )
    with watcher.lock:
        moved = np.abs(np.array(watcher.states[-50:]) - before[-1]).max()
        status = watcher.status
    assert status.chunks_received > 0 and watcher.chunks > 0
    assert moved > 0.02, f"the simulated arm did not move (max joint change {moved:.4f} rad)"


def test_sim_bringup_runs_an_instruction_and_stops_on_ctrl_c(demo_checkpoint, watcher):
    with RunnerProcess(["sim", "--checkpoint", str(demo_checkpoint)]) as run:
        try:
            _instruct_and_watch(watcher)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{run.tail()}") from None
        rc = run.stop()
    log = run.log
    assert rc == 0, f"smolvla-run did not exit cleanly on SIGINT (rc {rc}):\n{log[-3000:]}"
    assert "SIGINT received, shutting down" in log
    assert "Traceback" not in log, log[-3000:]
    lines = log.splitlines()
    progress = [  # each once: state changes only
        "arm: enabled since ",
        "policy: loading ",
        "policy: model loaded on ",
        "policy: instruction received: 'pick up the red cube'",  # while loading, or after
        "policy: first chunk published (inference ",
        "executor: executing the first chunk",
    ]
    found = [next((i for i, line in enumerate(lines) if line.startswith(p)), None) for p in progress]
    assert None not in found, f"missing progress lines {progress}:\n{log[-3000:]}"
    _, loading, loaded, instruction, first_chunk, executing = found
    assert loading < loaded < first_chunk < executing and instruction < first_chunk, log[-3000:]
    for prefix in progress:
        assert sum(line.startswith(prefix) for line in lines) == 1, prefix
    periodic = [line for line in lines if line.startswith("executor: executing, ")]
    executor_lines = [line for line in lines if line.startswith("executor: ")]
    assert len(executor_lines) <= 10 + len(periodic), executor_lines  # not a flood


@pytest.mark.parametrize("theirs", [False, True], ids=["fitted", "user-params-decide"])
def test_sim_renders_the_cameras_the_checkpoint_was_trained_with(tiny_checkpoint_factory, tmp_path, theirs):
    """`smolvla-run sim --checkpoint` with a front + wrist checkpoint (what `make train` records) at 48x64:
    the sim renders those cameras at that size and the policy runs on them (sim.yaml alone says top +
    wrist at 256x256, which the policy refuses). A --params file that names cameras decides instead."""
    checkpoint = tiny_checkpoint_factory(cameras=("front", "wrist"), image_shape=(3, 48, 64))
    args = ["sim", "--checkpoint", str(checkpoint), "--task", "pick up the red cube", "--device", "cpu"]
    rendered = {"front", "wrist"}
    if theirs:
        mine = tmp_path / "mine.yaml"
        mine.write_text(
            "/**/arm:\n  ros__parameters:\n    cameras: [side, wrist]\n"
            '/**/policy:\n  ros__parameters:\n    cameras: ["side:observation.images.front", wrist]\n'
        )
        args += ["--params", str(mine)]
        rendered = {"side", "wrist"}
    with RunnerProcess(args) as run:
        chunk = run.wait_for_line("policy: first chunk published", 150)
        topics = _camera_topics(expected=rendered, timeout=20)
        rc = run.stop()
    assert chunk, f"the policy published no chunk from the sim's cameras\n{run.tail()}"
    assert rc == 0, run.tail()
    assert "smolvla-run: the simulation renders the checkpoint's cameras (front, wrist) at 64x48" in run.log
    assert topics == rendered, run.tail()


def _camera_topics(expected: set[str], timeout: float) -> set[str]:
    """The cameras whose image topics the graph advertises (waits until they are ``expected``)."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("camera_topic_probe", context=context)
    try:
        deadline = time.monotonic() + timeout
        while True:
            names = [name.split("/") for name, _ in node.get_topic_names_and_types()]
            cameras = {n[2] for n in names if len(n) == 4 and n[1] == "cameras" and n[3] == "image_raw"}
            if cameras == expected or time.monotonic() > deadline:
                return cameras
            time.sleep(0.2)
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def _run_to_completion(cmd, timeout=240) -> tuple[int, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("unusable", ["missing", "needs-calibration"])
def test_a_policy_that_cannot_start_ends_the_run_with_exit_code_1(demo_checkpoint, unusable):
    """The policy reaches ERROR while loading: the run stops cleanly, exit code 1, the reason printed with
    the fix in the runner's flags (the gripper's LeRobot units need the calibration file)."""
    checkpoint = "/nonexistent/checkpoint" if unusable == "missing" else str(demo_checkpoint)
    cmd = [sys.executable, "-m", "smolvla_bringup.runner", "policy", "--checkpoint", checkpoint]
    rc, log = _run_to_completion([*cmd, "--device", "cpu", "--duration", "200"])
    assert rc == 1, log[-3000:]
    assert "policy: ERROR: cannot start the policy" in log
    assert "smolvla-run: stopped: the policy node could not start: cannot start the policy" in log
    if unusable == "missing":
        assert "/nonexistent/checkpoint" in log and "does not exist" in log
    else:
        assert "set calibration_file to the arm's LeRobot calibration JSON" in log
        assert "[smolvla-run: --calibration-file FILE]" in log
    assert "Traceback" not in log, log[-3000:]


def _emulated_robot(tmp_path, mismatch: bool):
    """A calibration file, and an emulated follower whose EEPROM matches it (or, with ``mismatch``, whose
    elbow_flex homing offset differs)."""
    import dataclasses

    from smolvla_common.calibration import ArmCalibration, MotorCalibration, save_calibration
    from so100_driver.emulator.bus_emulator import BusEmulator
    from so100_driver.emulator.presets import preset_motors

    motors = {m.name: MotorCalibration(m.motor_id, 0, m.homing_offset, m.range_min, m.range_max)
              for m in preset_motors("so101_follower")}  # fmt: skip
    file = save_calibration(ArmCalibration(motors), tmp_path / "follower.json")
    if mismatch:
        elbow = motors["elbow_flex"]
        motors["elbow_flex"] = dataclasses.replace(elbow, homing_offset=elbow.homing_offset + 100)
    emulated = save_calibration(ArmCalibration(motors), tmp_path / "servos.json")
    return file, BusEmulator(calibration=emulated)


@pytest.mark.parametrize("mismatch", [False, True], ids=["calibrated", "calibration-mismatch"])
def test_robot_graph_reports_the_arm_and_its_torque_off_at_shutdown(tmp_path, mismatch):
    calibration, emulator = _emulated_robot(tmp_path, mismatch)
    with emulator as emu:
        args = [
            "robot", "--port", emu.port, "--calibration-file", str(calibration),
            "--top-camera", str(tmp_path / "no_top"), "--wrist-camera", str(tmp_path / "no_wrist"),
        ]  # fmt: skip
        with RunnerProcess(args) as run:
            expected = "arm: torque off (calibration mismatch" if mismatch else "arm: enabled since "
            run.wait_for_line(expected, 90)
            time.sleep(3.0)  # the executor runs meanwhile: with a mismatch it must not command the idle arm
            torque_before = [emu.servo(i).torque_enabled for i in range(1, 7)]
            rc = run.stop()
        log = run.log
    assert any(line.startswith(expected) for line in log.splitlines()), log[-3000:]
    assert rc == 0, log[-3000:]
    assert torque_before == [not mismatch] * 6  # held (calibrated), or never enabled (mismatch)
    assert not any(emu.servo(i).torque_enabled for i in range(1, 7))
    assert "arm: torque off (shutdown)" in log.splitlines(), log[-3000:]
    if mismatch:
        assert "[smolvla-run: --calibration-file FILE]" in log  # the runner's flag for the file
        assert sum("[arm]: calibration mismatch" in line for line in log.splitlines()) == 1, log[-3000:]
        assert "joint_commands rejected" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def test_hints_name_the_runner_flags():
    """The nodes' hints (parameter names, launch syntax) in the runner's syntax: its flag when it has one,
    else a --params YAML line; launch-style `name:=value` is rewritten."""
    from smolvla_bringup.hints import for_runner

    text = "checkpoint stats look like degrees, not radians (units_check:=warn runs anyway)"
    assert for_runner("policy", text, {"units_check"}) == (
        "checkpoint stats look like degrees, not radians (units_check: warn runs anyway) "
        "[smolvla-run: --params FILE.yaml holding '/**/policy: {ros__parameters: {units_check: ...}}']"
    )
    text = "parameter checkpoint is empty: set it to a LeRobot SmolVLA checkpoint folder or repo id"
    assert for_runner("policy", text, {"checkpoint"}).endswith("[smolvla-run: --checkpoint CHECKPOINT]")
    text = "parameter 'source' = '/dev/video9' does not exist"
    assert for_runner("camera_top", text).endswith("[smolvla-run: --top-camera CAMERA]")
    assert for_runner("executor", "rate_hz:=15 is too slow", {"rate_hz"}) == (
        "--fps 15 is too slow [smolvla-run: --fps FPS]"
    )
    plain = "set the camera to that size"  # 'camera' is no parameter of the policy
    assert for_runner("policy", plain, {"cameras", "image_resize"}) == plain
    neutral = "calibration_file (smolvla-run: --calibration-file FILE; ros2 launch: calibration_file:=FILE)"
    assert for_runner("arm", neutral, {"calibration_file"}) == neutral  # already says it for every setup


def test_progress_prints_state_changes_not_a_flood():
    """Sync mode alternates executing and holding every chunk: a few lines, not one per status."""
    from smolvla_bringup.progress import Progress
    from smolvla_msgs.msg import ExecutorStatus

    progress, lines, steps = Progress(period_s=5.0), [], 0
    for tick in range(300):  # 30 s of statuses at 10 Hz: 0.5 s executing, 1 s holding, repeated
        executing = tick % 15 < 5
        steps += 3 if executing else 0
        state = ExecutorStatus.STATE_RUNNING if executing else ExecutorStatus.STATE_HOLDING
        msg = ExecutorStatus(state=state, executed_steps=steps, message="running" if executing else "holding")
        lines += progress.on_executor(msg, tick * 0.1)
    assert lines[1] == "executor: executing the first chunk (0 received)"
    assert not any(line.startswith("executor: idle") for line in lines)  # never 2 s without a step
    assert len(lines) == 2 + 5, lines  # the first status, executing, then one line per 5 s


def test_runner_refuses_bad_command_lines(capsys, tmp_path):
    assert runner.main(["sim", "--port", "/dev/ttyACM0"]) == 2
    assert "'port' does not apply" in capsys.readouterr().err
    assert runner.main(["sim", "--params", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert runner.main(["real", "--fps", "fast"]) == 2
    assert "'fps' must be a float" in capsys.readouterr().err
    assert runner.main(["robot", "--port", "/dev/null"]) == 2  # a node refusing its parameters
    err = capsys.readouterr().err
    assert "could not start the robot graph: arm: parameter 'calibration_file'" in err
    assert "[smolvla-run: --calibration-file FILE]" in err
    with pytest.raises(SystemExit):
        runner.main(["simulation"])


def test_a_busy_node_does_not_delay_the_others():
    """Every node spins on its own thread: a callback blocking 1.5 s in one node leaves another node's
    20 Hz timer ticking (with one shared single-threaded executor it would miss ~30 ticks)."""
    run = runner.Runner([], [])
    run.start()
    try:
        busy = rclpy.create_node("runner_test_busy", context=run.context)
        ticker = rclpy.create_node("runner_test_ticker", context=run.context)
        started, ticks = threading.Event(), []
        busy.create_timer(0.05, lambda: (started.set(), time.sleep(1.5)))
        ticker.create_timer(0.05, lambda: ticks.append(time.monotonic()))
        run.add_node(busy)
        run.add_node(ticker)
        assert started.wait(5), "the busy node never ran"
        time.sleep(1.2)  # entirely inside the busy callback
        during = [t for t in ticks if t > time.monotonic() - 1.0]
        assert len(during) >= 10, f"only {len(during)} ticks in the second the other node was busy"
    finally:
        run.shutdown()


def test_shutdown_stops_the_executor_before_the_arm_releases_torque(tmp_path):
    """The robot graph on the emulator: Ctrl-C destroys the executor first, so no command is in flight
    when the arm node, last, disables torque."""
    from smolvla_bringup import graph
    from smolvla_common.calibration import ArmCalibration, MotorCalibration, save_calibration
    from so100_driver.emulator.bus_emulator import BusEmulator
    from so100_driver.emulator.presets import preset_motors

    with BusEmulator(preset="so101_follower") as emu:
        calibration = tmp_path / "follower.json"
        motors = {m.name: MotorCalibration(m.motor_id, 0, m.homing_offset, m.range_min, m.range_max)
                  for m in preset_motors("so101_follower")}  # fmt: skip
        save_calibration(ArmCalibration(motors), calibration)
        config = graph.config_dir()
        run = runner.Runner(
            [graph.ARM, graph.EXECUTOR],
            [config / "executor.yaml", config / "robot.yaml"],
            {"arm": {"port": emu.port, "calibration_file": str(calibration)}},
        )
        run.start()
        events: list[tuple[str, float, bool]] = []

        def recorded(name, destroy):
            def destroy_and_record():
                events.append((name, time.monotonic(), emu.servo(1).torque_enabled))
                destroy()
                events.append((name + " done", time.monotonic(), emu.servo(1).torque_enabled))

            return destroy_and_record

        for node in run.nodes:
            node.destroy_node = recorded(node.get_name(), node.destroy_node)
        try:
            deadline = time.monotonic() + 10
            executor_node = next(n for n in run.nodes if n.get_name() == "executor")
            while time.monotonic() < deadline and executor_node.stats().last_command is None:
                time.sleep(0.05)
            assert executor_node.stats().last_command is not None, "the executor never commanded the arm"
            assert emu.servo(1).torque_enabled  # enable_torque_on_start: holding
        finally:
            run.shutdown()
        names = [name for name, _, _ in events]
        assert names == ["executor", "executor done", "arm", "arm done"], names
        assert events[2][2], "torque was already off before the arm node was stopped"
        assert not any(emu.servo(i).torque_enabled for i in range(1, 7))
        assert emu.goal_writes()[-1].time < events[1][1], "a goal was written after the executor stopped"
