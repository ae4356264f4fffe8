"""The suite run the way a ROS 2 user runs it: `ros2 launch` starts the graphs, `ros2 topic pub` gives the
task, `ros2 service call` stops the arm, `ros2 param set` tunes the executor, Ctrl-C ends it all.

Real parts only: the official launch system and ros2 CLI (installed by `make setup` from
`../shared/ros2-cli` in this dev setup, part of any ROS 2 install), the servo-bus emulator over a
pseudo-terminal as the arm, image folders as cameras, MuJoCo as the simulated arm, a tiny random-weight
SmolVLA checkpoint. The test process only watches over DDS and reads the emulated servos.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from smolvla_common.calibration import ArmCalibration, MotorCalibration, save_calibration
from smolvla_msgs.msg import ArmStatus, ExecutorStatus, PolicyStatus
from so100_driver.emulator.bus_emulator import BusEmulator
from so100_driver.emulator.presets import preset_motors

ROS2 = shutil.which("ros2")
pytestmark = pytest.mark.skipif(
    ROS2 is None
    or any(importlib.util.find_spec(m) is None for m in ("launch_ros", "composition_interfaces")),
    reason="the ROS 2 launch system and ros2 CLI are not installed: `make setup` installs them from "
    "../shared/ros2-cli when that folder exists; a full ROS 2 install has them",
)
INSTRUCTION = ["std_msgs/msg/String", "data: 'pick up the red cube'"]


class Watcher:
    """Joint states, the arm's, policy's and executor's status, seen from this test process over DDS."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("ros2_cli_test_watcher", context=self.context)
        self.lock = threading.RLock()  # predicates of wait_for may call motion_since
        self.states: list[np.ndarray] = []
        self.arm: ArmStatus | None = None
        self.policy: PolicyStatus | None = None
        self.executor: ExecutorStatus | None = None
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.node.create_subscription(JointState, "/joint_states", self._on_state, 50)
        self.node.create_subscription(ArmStatus, "/arm/status", lambda m: self._set("arm", m), latched)
        self.node.create_subscription(
            PolicyStatus, "/smolvla/policy_status", lambda m: self._set("policy", m), 10
        )
        self.node.create_subscription(
            ExecutorStatus, "/smolvla/executor_status", lambda m: self._set("executor", m), 10
        )
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self._executor.spin_once(timeout_sec=0.05)

    def _on_state(self, msg: JointState) -> None:
        with self.lock:
            self.states.append(np.array(msg.position))

    def _set(self, name: str, msg) -> None:
        with self.lock:
            setattr(self, name, msg)

    def wait_for(self, predicate, timeout: float, what: str, launch: Launch | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(self):
                    return
            time.sleep(0.1)
        log = f"\n--- ros2 launch output ---\n{launch.output()[-4000:]}" if launch else ""
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{log}")

    def motion_since(self, count: int) -> float:
        with self.lock:
            states = np.array(self.states[count:])
        return float(np.ptp(states, axis=0).max()) if len(states) > 1 else 0.0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


class Launch:
    """`ros2 launch smolvla_bringup <file> args...` in its own process group, output kept in a file."""

    def __init__(self, launch_file: str, args: list[str], log: Path) -> None:
        self.log = log
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                [ROS2, "launch", "smolvla_bringup", launch_file, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={
                    **os.environ,
                    "PYTHONUNBUFFERED": "1",
                    "RCUTILS_COLORIZED_OUTPUT": "0",
                    "PYTHONFAULTHANDLER": "1",  # SIGABRT prints every thread's stack (see interrupt)
                },
            )
        self.hang_report = ""

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def interrupt(self, timeout: float = 40.0) -> int | None:
        """Ctrl-C: SIGINT to `ros2 launch` only (it forwards it to its nodes); the exit code or None.

        When it does not end, :attr:`hang_report` lists the processes still there, and `ros2 launch` is
        made to print its threads' stacks (SIGABRT with PYTHONFAULTHANDLER) before everything is killed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.hang_report = "\n".join(processes_in_group(self.process.pid))
            self.process.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5.0)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            return None


def processes_in_group(group: int) -> list[str]:
    """'pid state command' of each process in process group ``group`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == group:  # fields after the name: state, ppid, pgrp, ...
            found.append(f"{stat.parent.name} {fields[0]} {command[:200]}")
    return found


def ros2(*args: str, timeout: float = 60.0) -> tuple[int, str]:
    """A `ros2` command as a user types it: (exit code, output). Output goes to a file, not a pipe, and the
    command runs in its own session, so nothing it leaves behind can keep the test waiting."""
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(
            [ROS2, *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            out.seek(0)
            raise AssertionError(
                f"`ros2 {' '.join(args)}` did not finish in {timeout:.0f} s: {out.read()}"
            ) from None
        out.seek(0)
        return code, out.read()


@pytest.fixture
def watcher():
    w = Watcher()
    yield w
    w.close()


@pytest.fixture
def launches(tmp_path):
    started: list[Launch] = []

    def start(launch_file: str, *args: str) -> Launch:
        started.append(Launch(launch_file, list(args), tmp_path / f"launch_{len(started)}.log"))
        return started[-1]

    yield start
    for launch in started:
        launch.interrupt()


@pytest.fixture
def robot_files(tmp_path, tiny_checkpoint_factory):
    """A tiny checkpoint (48x64 cameras), image folders as cameras and the emulated arm's calibration."""
    checkpoint = tiny_checkpoint_factory(chunk_size=50, n_action_steps=50)
    rng = np.random.default_rng(0)
    folders = {}
    for camera in ("top", "wrist"):
        folder = tmp_path / camera
        folder.mkdir()
        for i in range(5):
            cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        folders[camera] = folder
    motors = {
        m.name: MotorCalibration(m.motor_id, 0, m.homing_offset, m.range_min, m.range_max)
        for m in preset_motors("so101_follower")
    }
    calibration = save_calibration(ArmCalibration(motors), tmp_path / "follower.json")
    params = tmp_path / "test.yaml"
    params.write_text("/**/policy:\n  ros__parameters: {device: cpu, warmup: false}\n")
    return checkpoint, folders, calibration, params


def robot_args(emu: BusEmulator, folders, calibration) -> list[str]:
    return [
        f"port:={emu.port}",
        f"calibration_file:={calibration}",
        f"top_camera:={folders['top']}",
        f"wrist_camera:={folders['wrist']}",
        "camera_fps:=10",
    ]


def wait_ready(watcher: Watcher, launch: Launch, policy: bool = True) -> None:
    enabled = ArmStatus.STATE_ENABLED
    watcher.wait_for(lambda w: w.arm is not None and w.arm.state == enabled, 60, "the arm enabled", launch)
    watcher.wait_for(lambda w: len(w.states) > 20, 30, "joint states", launch)
    if policy:
        ready = PolicyStatus.STATE_READY
        watcher.wait_for(
            lambda w: w.policy is not None and w.policy.state == ready, 120, "the policy", launch
        )


def instruct_and_see_it_move(watcher: Watcher, launch: Launch) -> None:
    start = len(watcher.states)
    # --keep-alive: the CLI publishes once its side has matched the policy; under load the policy's side may
    # match later, and the reliable writer must still be there to deliver (the default 0.1 s lost it in CI)
    code, output = ros2("topic", "pub", "--once", "--keep-alive", "2", "/instruction", *INSTRUCTION)
    assert code == 0, output
    watcher.wait_for(
        lambda w: w.executor is not None and w.executor.executed_steps > 30, 90, "executed actions", launch
    )
    watcher.wait_for(lambda w: w.motion_since(start) > 0.02, 30, "the arm moving", launch)


def assert_clean_exit(launch: Launch) -> str:
    rc = launch.interrupt()
    output = launch.output()
    assert rc == 0, (
        f"ros2 launch exited with {rc}:\n{output[-12000:]}\nstill running after Ctrl-C:\n{launch.hang_report}"
    )
    assert "Traceback" not in output, output[-3000:]
    assert "process has died" not in output, output[-3000:]
    return output


def test_real_launch_on_the_emulator_moves_on_a_topic_pub_stops_on_a_service_call_and_ends_with_torque_off(
    watcher, launches, robot_files
):
    checkpoint, folders, calibration, params = robot_files
    with BusEmulator(preset="so101_follower") as emu:
        launch = launches(
            "real.launch.py",
            *robot_args(emu, folders, calibration),
            f"checkpoint:={checkpoint}",
            f"params:={params}",
        )
        wait_ready(watcher, launch)
        instruct_and_see_it_move(watcher, launch)

        code, output = ros2("service", "call", "/executor/stop", "std_srvs/srv/Trigger")
        assert code == 0 and "success=True" in output, output
        time.sleep(1.0)  # the last command reached; then the arm holds
        held = len(watcher.states)
        time.sleep(1.5)
        assert watcher.motion_since(held) < 0.005, "the arm kept moving after /executor/stop"

        code, output = ros2("param", "set", "--no-daemon", "--timeout", "10", "/executor", "threshold", "0.3")
        assert code == 0 and "successful" in output, output
        assert (
            ros2("param", "get", "--no-daemon", "--timeout", "10", "/executor", "threshold")[1]
            .strip()
            .endswith("0.3")
        )
        code, output = ros2("param", "set", "--no-daemon", "--timeout", "10", "/executor", "rate_hz", "50.0")
        assert "read at startup only" in output, output

        arm = watcher.arm
        assert all(emu.servo(i).torque_enabled for i in range(1, 7)), (
            f"torque went off before Ctrl-C: arm state {arm.state}, {arm.message!r}\n"
            f"{launch.output()[-4000:]}"
        )
        output = assert_clean_exit(launch)
        assert not any(emu.servo(i).torque_enabled for i in range(1, 7)), "torque still on after Ctrl-C"
        for node in ("arm_node", "policy_node", "executor_node", "camera_node", "chunk_visualizer_node"):
            lines = [line for line in output.splitlines() if f"[{node}-" in line]
            assert any("process has finished cleanly" in line for line in lines), f"{node}: {lines[-3:]}"


def test_sim_launch_starts_and_the_estop_service_turns_torque_off(
    watcher, launches, tiny_checkpoint_factory, tmp_path
):
    checkpoint = tiny_checkpoint_factory(chunk_size=50, n_action_steps=50)
    params = tmp_path / "sim_test.yaml"
    params.write_text(
        "/**/arm:\n  ros__parameters: {camera_width: 64, camera_height: 48, camera_fps: 10.0}\n"
        "/**/policy:\n  ros__parameters: {device: cpu, warmup: false}\n"
    )
    launch = launches("sim.launch.py", f"checkpoint:={checkpoint}", f"params:={params}")
    wait_ready(watcher, launch)  # (an instruction moving the arm is shown with real.launch.py above)
    code, output = ros2("service", "call", "/executor/estop", "std_srvs/srv/Trigger")
    assert code == 0 and "success=True" in output, output
    idle = ArmStatus.STATE_IDLE
    watcher.wait_for(lambda w: w.arm.state == idle, 10, "the arm's torque off after the e-stop", launch)
    assert_clean_exit(launch)


def test_robot_and_policy_launch_files_split_across_two_launches(watcher, launches, robot_files):
    """The remote-GPU split: `robot.launch.py` (cameras, arm, executor) and `policy.launch.py` apart."""
    checkpoint, folders, calibration, params = robot_files
    shown = ros2("launch", "smolvla_bringup", "robot.launch.py", "--show-args")[1]
    assert "'port'" in shown and "'checkpoint'" not in shown  # only the arguments that apply
    with BusEmulator(preset="so101_follower") as emu:
        robot = launches("robot.launch.py", *robot_args(emu, folders, calibration))
        policy = launches("policy.launch.py", f"checkpoint:={checkpoint}", f"params:={params}",
                          f"calibration_file:={calibration}")  # fmt: skip
        wait_ready(watcher, robot)
        wait_ready(watcher, policy)
        instruct_and_see_it_move(watcher, robot)
        assert_clean_exit(policy)
        assert_clean_exit(robot)
        assert not any(emu.servo(i).torque_enabled for i in range(1, 7))
