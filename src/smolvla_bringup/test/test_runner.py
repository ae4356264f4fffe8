"""`smolvla-run sim` end to end: the sim bringup in its own process, an instruction from `smolvla-instruct`,
chunks executed and the simulated arm moving, then a clean exit on Ctrl-C (SIGINT).

Everything is real: the runner process builds the nodes from the shipped YAML files (MuJoCo arm and
cameras, policy with a tiny generated checkpoint, executor); this test talks to it over DDS only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
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


def _stop(process, reader) -> int | None:
    """Ctrl-C the runner; its exit code, or None when it had to be killed."""
    process.send_signal(signal.SIGINT)
    try:
        rc = process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        rc = None
    reader.join(timeout=5)
    return rc


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
    cmd = [sys.executable, "-m", "smolvla_bringup.runner", "sim", "--checkpoint", str(demo_checkpoint)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    try:
        _instruct_and_watch(watcher)
    except BaseException as err:  # never leave the runner process behind
        _stop(process, reader)
        if isinstance(err, AssertionError):
            raise AssertionError(f"{err}\n--- smolvla-run output ---\n{''.join(output)[-4000:]}") from None
        raise
    rc = _stop(process, reader)
    log = "".join(output)
    assert rc == 0, f"smolvla-run did not exit cleanly on SIGINT (rc {rc}):\n{log[-3000:]}"
    assert "SIGINT received, shutting down" in log
    assert "Traceback" not in log, log[-3000:]


def test_runner_refuses_bad_command_lines(capsys, tmp_path):
    assert runner.main(["sim", "--port", "/dev/ttyACM0"]) == 2
    assert "'port' does not apply" in capsys.readouterr().err
    assert runner.main(["sim", "--params", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert runner.main(["real", "--fps", "fast"]) == 2
    assert "'fps' must be a float" in capsys.readouterr().err
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
