"""Arm node over real DDS (rclpy) driving the emulator with the real scservo_sdk over a real pty.

Each scenario checks what a user sees: /joint_states, /arm/commanded, /diagnostics and the torque service,
with the node alive throughout and every commanded goal inside the calibrated range and within max_step.
"""

import math
import threading
import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from so100_driver.arm_controller import ArmState
from so100_driver.arm_node import ArmNode, ParameterError
from so100_driver.calibration import ArmCalibration, MotorCalibration, save_calibration
from so100_driver.emulator.bus_emulator import BusEmulator
from so100_driver.emulator.presets import preset_motors
from so100_driver.protocol import ErrorBit

MAX_STEP = 0.02
STEP_RAD = 2 * math.pi / 4095


def write_calibration(path, preset="so101_follower"):
    cal = ArmCalibration(
        {
            m.name: MotorCalibration(m.motor_id, 0, m.homing_offset, m.range_min, m.range_max)
            for m in preset_motors(preset)
        }
    )
    save_calibration(cal, path)
    return cal


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    ctx.try_shutdown()


@pytest.fixture
def emu():
    with BusEmulator(preset="so101_follower") as emulator:
        yield emulator


class Probe:
    """A test-side node: records topics, calls the torque service, publishes commands and /clock."""

    def __init__(self, context):
        self.node = Node("probe", context=context)
        self.lock = threading.RLock()
        self.states, self.commanded, self.diagnostics = [], [], []
        self.node.create_subscription(JointState, "/joint_states", lambda m: self._add(self.states, m), 50)
        self.node.create_subscription(
            JointState, "/arm/commanded", lambda m: self._add(self.commanded, m), 200
        )
        self.node.create_subscription(
            DiagnosticArray, "/diagnostics", lambda m: self._add(self.diagnostics, m), 50
        )
        self.commands = self.node.create_publisher(JointTrajectory, "/joint_commands", 10)
        self.clock = self.node.create_publisher(Clock, "/clock", 10)
        self.torque = self.node.create_client(SetBool, "/arm/torque")

    def _add(self, bucket, msg):
        with self.lock:
            bucket.append(msg)

    def wait(self, predicate, timeout=5.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if predicate():
                    return True
            time.sleep(0.01)
        return False

    def set_torque(self, on, timeout=5.0):
        assert self.torque.wait_for_service(timeout_sec=timeout)
        future = self.torque.call_async(SetBool.Request(data=on))
        end = time.monotonic() + timeout
        while not future.done() and time.monotonic() < end:
            time.sleep(0.01)
        return future.result()

    def send(self, names, points):
        msg = JointTrajectory()
        msg.joint_names = list(names)
        for t, positions in points:
            point = JointTrajectoryPoint(positions=[float(p) for p in positions])
            point.time_from_start.sec = int(t)
            point.time_from_start.nanosec = int((t - int(t)) * 1e9)
            msg.points.append(point)
        self.commands.publish(msg)

    def statuses(self, name_part):
        with self.lock:
            return [s for d in self.diagnostics for s in d.status if name_part in s.name]


@pytest.fixture
def running(context, emu, tmp_path):
    """Start arm node + probe on one executor thread; yields (node, probe); stops everything cleanly."""
    nodes = []
    executor = SingleThreadedExecutor(context=context)
    thread = None

    def start(**params):
        nonlocal thread
        calibration_file = tmp_path / "follower.json"
        write_calibration(calibration_file)
        values = dict(
            port=emu.port,
            calibration_file=str(calibration_file),
            bus_timeout_ms=100.0,
            bus_retries=2,
            retry_budget_ms=200.0,
            max_step=MAX_STEP,
            diagnostics_rate_hz=20.0,
            silent_fault_s=0.8,
            overload_backoff_s=0.05,
            hard_fault_s=0.4,
            reconnect_period_s=0.05,
        )
        values.update(params)
        overrides = [Parameter(k, value=v) for k, v in values.items()]
        node = ArmNode(context=context, parameter_overrides=overrides)
        probe = Probe(context)
        nodes.extend([node, probe.node])
        executor.add_node(node)
        executor.add_node(probe.node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        return node, probe

    yield start
    for node in nodes:
        executor.remove_node(node)
        node.destroy_node()
    executor.shutdown()
    if thread is not None:
        thread.join(timeout=5)


def check_commanded(node, commanded):
    """Safety invariants on every published goal."""
    joints = node.controller.joints
    previous = None
    for msg in commanded:
        goals = dict(zip(msg.name, msg.position, strict=True))
        for name, goal in goals.items():
            assert joints[name].lower - 1e-9 <= goal <= joints[name].upper + 1e-9
            if previous is not None:
                assert abs(goal - previous[name]) <= MAX_STEP + 1e-9
        previous = goals


def test_publishes_positions_matching_the_emulator(running, emu):
    node, probe = running()
    assert probe.wait(lambda: len(probe.states) >= 5)
    msg = probe.states[-1]
    assert msg.name == ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
    for name, position in zip(msg.name, msg.position, strict=True):
        joint = node.controller.joints[name]
        assert abs(position - joint.to_rad(emu.servo(joint.servo_id).angle_raw)) <= STEP_RAD
    assert len(msg.velocity) == 6 and len(msg.effort) == 6

    def gripper_values():
        statuses = probe.statuses("arm: gripper")
        return {kv.key: kv.value for kv in statuses[-1].values} if statuses else {}

    assert probe.wait(lambda: gripper_values().get("temperature_c", "unknown") != "unknown")
    values = gripper_values()
    assert {"temperature_c", "voltage_v", "load_percent", "current_ma", "error_bits"} <= set(values)
    assert float(values["temperature_c"]) == pytest.approx(emu.servo(6).get("Present_Temperature"), abs=1)
    assert float(values["voltage_v"]) == pytest.approx(emu.servo(6).get("Present_Voltage") / 10, abs=0.2)
    bus_keys = {kv.key for kv in probe.statuses("arm: bus")[-1].values}
    assert {"retries", "timeouts", "corrupt", "state", "errors_per_s", "retries_per_s"} <= bus_keys


def test_torque_trajectory_and_rejected_commands(running, emu):
    node, probe = running()
    assert probe.wait(lambda: probe.states)
    response = probe.set_torque(True)
    assert response.success, response.message
    start = probe.states[-1]
    pan = dict(zip(start.name, start.position, strict=True))["shoulder_pan"]
    probe.send(["shoulder_pan"], [(0.2, [pan + 0.15]), (0.4, [pan + 0.3])])
    assert probe.wait(lambda: probe.commanded and abs(probe.commanded[-1].position[0] - (pan + 0.3)) < 1e-6)
    probe.send(["shoulder_pan", "wrist_flex"], [(0.1, [math.nan, 0.0])])
    probe.send(["shoulder_pan", "elbow"], [(0.1, [0.0, 0.0])])
    assert probe.wait(lambda: any("elbow" in s.message for s in probe.statuses("arm: bus")))
    time.sleep(0.2)
    assert node.controller.rejected_commands == 2
    assert abs(probe.commanded[-1].position[0] - (pan + 0.3)) < 1e-6  # rejected commands moved nothing
    check_commanded(node, probe.commanded)
    servo = emu.servo(1)
    joint = node.controller.joints["shoulder_pan"]
    assert probe.wait(lambda: abs(servo.present_position - joint.to_raw(pan + 0.3)) <= 2)


def test_overload_then_usb_drop_node_stays_alive(running, emu):
    node, probe = running()
    assert probe.wait(lambda: probe.states)
    assert probe.set_torque(True).success
    emu.faults.set_error_bits(3, ErrorBit.OVERLOAD)
    assert probe.wait(lambda: any("OVERLOAD" in s.message for s in probe.statuses("arm: elbow_flex")))
    assert probe.wait(lambda: node.state == ArmState.FAULT, timeout=3)
    assert probe.wait(lambda: any("FAULT" in s.message for s in probe.statuses("arm: bus")))
    assert not any(emu.servo(i).torque_enabled for i in range(1, 7))
    emu.faults.clear()
    assert probe.set_torque(True).success
    emu.disconnect()
    assert probe.wait(lambda: any("disconnected" in s.message for s in probe.statuses("arm: bus")))
    emu.reconnect()
    assert probe.wait(lambda: node.state == ArmState.ENABLED, timeout=3)
    count = len(probe.states)
    assert probe.wait(lambda: len(probe.states) > count + 5)
    assert emu.servo(1).torque_enabled
    check_commanded(node, probe.commanded)


def test_sim_time_stamps_and_shutdown_torque_off(running, emu):
    node, probe = running(use_sim_time=True)
    clock = Clock()
    clock.clock.sec = 1234
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(s.header.stamp.sec == 1234 for s in probe.states):
        probe.clock.publish(clock)
        time.sleep(0.05)
    assert any(s.header.stamp.sec == 1234 for s in probe.states)
    assert probe.set_torque(True).success
    assert emu.servo(2).torque_enabled
    node.stop()
    assert not any(emu.servo(i).torque_enabled for i in range(1, 7))


def test_bad_parameters_are_named(context, emu, tmp_path):
    with pytest.raises(ParameterError, match="calibration_file"):
        ArmNode(context=context, parameter_overrides=[Parameter("port", value=emu.port)])
    calibration_file = tmp_path / "c.json"
    write_calibration(calibration_file)
    with pytest.raises(ParameterError, match="robot_type"):
        ArmNode(
            context=context,
            parameter_overrides=[
                Parameter("calibration_file", value=str(calibration_file)),
                Parameter("robot_type", value="so102"),
            ],
        )
    with pytest.raises(ParameterError, match="control_rate_hz"):
        ArmNode(
            context=context,
            parameter_overrides=[
                Parameter("calibration_file", value=str(calibration_file)),
                Parameter("control_rate_hz", value="fast"),
            ],
        )
    with pytest.raises(ParameterError, match="motor_ids"):
        ArmNode(
            context=context,
            parameter_overrides=[
                Parameter("calibration_file", value=str(calibration_file)),
                Parameter("motor_ids", value=[1, 2, 3, 4, 5, 7]),
            ],
        )
