"""Leader node over real DDS, and teleoperation leader -> follower through two emulated buses.

Both arms are emulators driven by the real scservo_sdk over real ptys; the joint values travel over DDS.
"""

import threading
import time

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool

from smolvla_common.calibration import ArmCalibration, MotorCalibration, save_calibration
from so100_driver.arm_node import ArmNode
from so100_driver.emulator.bus_emulator import BusEmulator
from so100_driver.emulator.presets import preset_motors
from so100_driver.leader_node import LeaderNode


def calibration_file(path, preset):
    cal = ArmCalibration(
        {
            m.name: MotorCalibration(m.motor_id, 0, m.homing_offset, m.range_min, m.range_max)
            for m in preset_motors(preset)
        }
    )
    return str(save_calibration(cal, path))


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    ctx.try_shutdown()


@pytest.fixture
def spin(context):
    executor = SingleThreadedExecutor(context=context)
    nodes = []
    thread = threading.Thread(target=executor.spin, daemon=True)

    def add(node):
        nodes.append(node)
        executor.add_node(node)
        if not thread.is_alive():
            thread.start()
        return node

    yield add
    executor.shutdown()  # stop spinning before the nodes' handles go
    thread.join(timeout=5)
    for node in reversed(nodes):
        node.destroy_node()


@pytest.fixture
def leader_emu():
    with BusEmulator(preset="so101_leader") as emulator:
        yield emulator


@pytest.fixture
def follower_emu():
    with BusEmulator(preset="so101_follower") as emulator:
        yield emulator


def wait(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_teleoperation_leader_drives_follower(context, leader_emu, follower_emu, spin, tmp_path):
    # the emulators are set up before `spin`, so the nodes are destroyed while the buses still exist
    leader_emu.servo(3).set("Torque_Enable", 1)  # a leader left with torque on: the node releases it
    received = []
    probe = spin(Node("probe", context=context))
    probe.create_subscription(JointState, "/leader/joint_states", received.append, 50)
    torque = probe.create_client(SetBool, "/arm/torque")
    follower = spin(
        ArmNode(
            context=context,
            parameter_overrides=[
                Parameter("port", value=follower_emu.port),
                Parameter("calibration_file", value=calibration_file(tmp_path / "f.json", "so101_follower")),
                Parameter("bus_timeout_ms", value=100.0),
                Parameter("max_step", value=0.02),
            ],
        )
    )
    assert torque.wait_for_service(timeout_sec=5)
    assert wait(lambda: follower.controller.state.value == "idle")
    future = torque.call_async(SetBool.Request(data=True))
    assert wait(future.done) and future.result().success, future.result()
    leader = spin(
        LeaderNode(
            context=context,
            parameter_overrides=[
                Parameter("port", value=leader_emu.port),
                Parameter("calibration_file", value=calibration_file(tmp_path / "l.json", "so101_leader")),
                Parameter("bus_timeout_ms", value=100.0),
                Parameter("rate_hz", value=50),  # an int for a float parameter is fine
                Parameter("mirror_to_commands", value=True),
            ],
        )
    )
    assert wait(lambda: len(received) > 3)
    assert not leader_emu.servo(3).torque_enabled

    # move the leader's elbow by hand: the follower's elbow goes to the same angle (each arm's own zero)
    elbow_leader = leader.leader.joints["elbow_flex"]
    elbow_follower = follower.controller.joints["elbow_flex"]
    leader_emu.servo(3).set_physical_position(round(elbow_leader.motor.mid) + 300)
    target = elbow_leader.to_rad(round(elbow_leader.motor.mid) + 300)

    def leader_elbow():
        return dict(zip(received[-1].name, received[-1].position, strict=True))["elbow_flex"]

    assert wait(lambda: abs(leader_elbow() - target) < 0.003)
    follower_servo = follower_emu.servo(3)
    assert wait(lambda: abs(follower_servo.present_position - elbow_follower.to_raw(target)) <= 3, timeout=8)
    assert follower.controller.rejected_commands == 0


def test_leader_calibration_mismatch_publishes_nothing(context, leader_emu, spin, tmp_path):
    emu = leader_emu
    emu.servo(2).set("Max_Position_Limit", 3000)
    received = []
    probe = spin(Node("probe", context=context))
    probe.create_subscription(JointState, "/leader/joint_states", received.append, 50)
    leader = spin(
        LeaderNode(
            context=context,
            parameter_overrides=[
                Parameter("port", value=emu.port),
                Parameter("calibration_file", value=calibration_file(tmp_path / "l.json", "so101_leader")),
            ],
        )
    )
    assert wait(lambda: leader.leader.cycles > 10)
    assert any("Max_Position_Limit" in p for p in leader.leader.calibration_problems)
    time.sleep(0.1)
    assert received == []
