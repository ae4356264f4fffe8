"""ROS-free follower/leader logic against the emulator (real scservo_sdk over a real pty).

Every test checks the safety invariants on the goals actually written: inside the calibrated range and
never more than ``max_step`` from the previous goal.
"""

import math
import time

import pytest

from so100_driver.arm_controller import (
    ArmController,
    ArmState,
    CommandError,
    Joint,
    LeaderArm,
    SafetyConfig,
)
from so100_driver.bus import FeetechBus
from so100_driver.emulator.bus_emulator import BusEmulator
from so100_driver.emulator.presets import preset_motors
from so100_driver.protocol import ErrorBit

MAX_STEP = 0.02
STEP_RAD = 2 * math.pi / 4095


def preset_joints(preset="so101_follower"):
    return [
        Joint(m.name, m.motor_id, m.range_min, m.range_max, m.homing_offset, is_gripper=m.name == "gripper")
        for m in preset_motors(preset)
    ]


def fast_safety(**overrides):
    values = dict(
        max_step=MAX_STEP,
        overload_backoff_s=0.05,
        hard_fault_s=0.4,
        recover_s=0.2,
        silent_fault_s=0.8,
        reconnect_period_s=0.05,
        gripper_stall_s=0.1,
    )
    values.update(overrides)
    return SafetyConfig(**values)


class Harness:
    """Runs control cycles at ~100 Hz and checks every written goal against the safety invariants."""

    def __init__(self, emu, controller):
        self.emu = emu
        self.c = controller
        self.t0 = time.monotonic()
        self.previous_goals = None
        self.results = []

    def now(self):
        return time.monotonic() - self.t0

    def run(self, seconds, until=None):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            result = self.c.step(self.now())
            self.results.append(result)
            self.check(result)
            if until is not None and until(result):
                return result
            time.sleep(0.008)
        return None

    def check(self, result):
        if result.goals is None:
            self.previous_goals = None if result.state != ArmState.ENABLED else self.previous_goals
            return
        for name, goal in result.goals.items():
            joint = self.c.joints[name]
            assert joint.lower - 1e-9 <= goal <= joint.upper + 1e-9, (name, goal)
            if self.previous_goals is not None:
                assert abs(goal - self.previous_goals[name]) <= MAX_STEP + 1e-9, (name, goal)
        self.previous_goals = dict(result.goals)


@pytest.fixture
def emu():
    with BusEmulator(preset="so101_follower") as emulator:
        yield emulator


def connect(link, attempts=3):
    """Connect, tolerating a starved emulator thread on a heavily loaded test machine."""
    return any(link.connect() for _ in range(attempts))


def make_controller(emu, **safety):
    bus = FeetechBus(emu.port, timeout_ms=100.0, retries=2, retry_budget_ms=200.0)
    return ArmController(bus, preset_joints(), fast_safety(**safety))


@pytest.fixture
def arm(emu):
    controller = make_controller(emu)
    assert connect(controller), controller.connect_error
    harness = Harness(emu, controller)
    yield harness
    controller.shutdown()


def report(controller, suffix):
    """The diagnostic status whose name ends with ``suffix`` (e.g. "bus", "gripper")."""
    return next(r for r in controller.reports() if r.name.endswith(suffix))


def enabled(arm):
    ok, message = arm.c.enable_torque()
    assert ok, message
    arm.previous_goals = dict(arm.c.goals)
    return arm


def test_positions_match_ground_truth_within_one_step(arm):
    result = arm.run(3.0, until=lambda r: r.positions is not None)
    assert result.positions is not None
    for name, joint in arm.c.joints.items():
        truth = arm.emu.servo(joint.servo_id).angle_raw  # continuous shaft angle, Present_Position frame
        assert abs(result.positions[name] - joint.to_rad(truth)) <= STEP_RAD
        mid = (joint.range_min + joint.range_max) / 2
        assert result.positions[name] == pytest.approx(
            (arm.emu.servo(joint.servo_id).present_position - mid) * STEP_RAD
        )


def test_torque_on_starts_at_present_position(arm):
    enabled(arm)
    for joint in arm.c.joints.values():
        servo = arm.emu.servo(joint.servo_id)
        assert servo.torque_enabled
        assert servo.get("Goal_Position") == servo.present_position
    arm.run(0.1)
    for joint in arm.c.joints.values():  # nothing moved: it holds where it was
        assert (
            abs(arm.emu.servo(joint.servo_id).present_position - arm.c.health[joint.name].position_raw) <= 2
        )


def test_calibration_mismatch_refuses_torque(emu):
    emu.servo(3).set("Homing_Offset", -900)
    controller = make_controller(emu)
    assert connect(controller)
    assert any("elbow_flex" in p and "Homing_Offset" in p for p in controller.calibration_problems)
    ok, message = controller.enable_torque()
    assert not ok
    assert "elbow_flex" in message and "so100-calibrate" in message
    assert not any(emu.servo(i).torque_enabled for i in range(1, 7))
    assert controller.reports()[0].level == 2
    controller.shutdown()


def test_trajectory_is_interpolated_and_step_limited(arm):
    enabled(arm)
    start = dict(arm.c.goals)
    target = dict(start, shoulder_pan=start["shoulder_pan"] + 0.5, elbow_flex=start["elbow_flex"] - 0.3)
    names = list(target)
    now = arm.now()
    middle = [(start[n] + target[n]) / 2 for n in names]
    arm.c.command(now, names, [(0.2, middle), (0.4, [target[n] for n in names])])
    arm.run(0.2)
    assert start["shoulder_pan"] < arm.c.goals["shoulder_pan"] < target["shoulder_pan"]
    arm.run(
        5.0,
        until=lambda r: (
            arm.c.plan is None
            and all(r.goals[n] == pytest.approx(target[n]) for n in ("shoulder_pan", "elbow_flex"))
        ),
    )
    assert arm.c.goals["shoulder_pan"] == pytest.approx(target["shoulder_pan"])
    assert arm.c.goals["elbow_flex"] == pytest.approx(target["elbow_flex"])
    assert arm.c.plan is None  # plan ran out: holding its last point
    pan = arm.c.joints["shoulder_pan"]
    assert arm.emu.wait_idle()  # the sync write has no reply: let the emulator process it
    assert abs(arm.emu.servo(1).get("Goal_Position") - pan.to_raw(target["shoulder_pan"])) <= 1


def test_jump_is_limited_to_max_step_and_range(arm):
    enabled(arm)
    before = arm.c.goals["wrist_flex"]
    arm.c.command(arm.now(), ["wrist_flex"], [(0.0, [10.0])])  # far outside the range: clamped
    arm.run(0.03)
    moved = arm.c.goals["wrist_flex"] - before
    assert 0 < moved <= MAX_STEP * len(arm.results) + 1e-9
    arm.run(2.5, until=lambda r: r.goals and r.goals["wrist_flex"] >= arm.c.joints["wrist_flex"].upper)
    assert arm.c.goals["wrist_flex"] == pytest.approx(arm.c.joints["wrist_flex"].upper)
    assert arm.emu.wait_idle()
    assert arm.emu.servo(4).get("Goal_Position") <= arm.c.joints["wrist_flex"].range_max


@pytest.mark.parametrize(
    ("names", "points", "match"),
    [
        (["shoulder_pan", "elbw"], [(0.1, [0.0, 0.0])], "unknown joint"),
        (["shoulder_pan"], [(0.1, [math.nan])], "NaN"),
        (["shoulder_pan"], [(0.1, [math.inf])], "non-finite"),
        (["shoulder_pan"], [(0.2, [0.0]), (0.1, [0.1])], "back in time"),
        (["shoulder_pan"], [(0.1, [0.0, 1.0])], "2 positions for 1"),
        (["shoulder_pan"], [], "no points"),
        ([], [(0.1, [])], "empty"),
    ],
)
def test_bad_commands_are_rejected_without_motion(arm, names, points, match):
    enabled(arm)
    goals = dict(arm.c.goals)
    with pytest.raises(CommandError, match=match):
        arm.c.command(arm.now(), names, points)
    arm.run(0.05)
    assert arm.c.goals == pytest.approx(goals)
    assert arm.c.rejected_commands == 1 and match.split()[0].lower() in arm.c.last_rejection.lower()


def test_command_while_torque_off_is_rejected(arm):
    with pytest.raises(CommandError, match="enable torque"):
        arm.c.command(arm.now(), ["gripper"], [(0.0, [0.1])])


def test_overload_bit_backs_off_then_hard_fault_disables_torque(arm):
    enabled(arm)
    arm.c.command(arm.now(), ["elbow_flex"], [(1.0, [arm.c.goals["elbow_flex"] + 0.4])])
    arm.run(0.1)
    arm.emu.faults.set_error_bits(3, ErrorBit.OVERLOAD)
    arm.run(3.0, until=lambda r: arm.c.health["elbow_flex"].backed_off)
    health = arm.c.health["elbow_flex"]
    assert health.backed_off and "OVERLOAD" in health.backoff_reason
    held = arm.c.targets["elbow_flex"]
    assert abs(held - arm.c.joints["elbow_flex"].to_rad(arm.emu.servo(3).present_position)) < 0.05
    assert "elbow_flex" not in arm.c.plan.joints if arm.c.plan else True
    assert arm.c.state == ArmState.ENABLED
    arm.run(5.0, until=lambda r: r.state == ArmState.FAULT)
    assert arm.c.state == ArmState.FAULT
    assert "elbow_flex" in arm.c.fault_message
    assert not any(arm.emu.servo(i).torque_enabled for i in range(1, 7))
    reports = arm.c.reports()
    assert reports[0].level == 2 and "FAULT" in reports[0].message
    assert any("OVERLOAD" in r.message for r in reports[1:])
    with pytest.raises(CommandError, match="fault"):
        arm.c.command(arm.now(), ["gripper"], [(0.0, [0.0])])


def test_transient_overheat_backs_off_and_recovers(arm):
    enabled(arm)
    arm.emu.servo(2).set_temperature(61)
    arm.run(3.0, until=lambda r: arm.c.health["shoulder_lift"].backed_off)
    assert "temperature" in arm.c.health["shoulder_lift"].backoff_reason
    lift = report(arm.c, "shoulder_lift")
    assert lift.level >= 1 and "backed off" in lift.message and "hot: 61 C" in lift.message
    arm.emu.servo(2).set_temperature(40)
    arm.run(5.0, until=lambda r: not arm.c.health["shoulder_lift"].backed_off)
    assert not arm.c.health["shoulder_lift"].backed_off
    assert arm.c.state == ArmState.ENABLED


def test_hard_temperature_disables_torque(arm):
    enabled(arm)
    arm.emu.servo(5).set_temperature(66)
    arm.run(5.0, until=lambda r: r.state == ArmState.FAULT)
    assert arm.c.state == ArmState.FAULT and "temperature" in arm.c.fault_message
    assert not any(arm.emu.servo(i).torque_enabled for i in range(1, 7))
    assert report(arm.c, "bus").level == 2 and "wrist_roll: temperature" in report(arm.c, "bus").message


def test_blocked_joint_backs_off_and_holds(arm):
    enabled(arm)
    lift = arm.c.joints["shoulder_lift"]
    here = arm.emu.servo(2).present_position
    arm.emu.block(2, here + 60)
    arm.c.command(arm.now(), ["shoulder_lift"], [(0.3, [lift.to_rad(here + 600)])])
    arm.run(5.0, until=lambda r: arm.c.health["shoulder_lift"].backed_off)
    health = arm.c.health["shoulder_lift"]
    assert health.backed_off, [str(r) for r in arm.c.reports()]
    assert "load" in report(arm.c, "shoulder_lift").message
    arm.run(5.0, until=lambda r: abs(arm.emu.servo(2).get("Goal_Position") - (here + 60)) < 20)
    assert arm.c.state == ArmState.ENABLED
    # holding near the obstacle, not pushing into it
    assert arm.emu.wait_idle()
    assert abs(arm.emu.servo(2).get("Goal_Position") - (here + 60)) < 40
    assert abs(arm.emu.servo(2).load) < 400


def test_gripper_squeezing_an_object_stops_pushing(arm):
    """Torque_Limit caps the gripper's load at 50 %, so the stall guard (current + position error) acts."""
    enabled(arm)
    gripper = arm.c.joints["gripper"]
    here = arm.emu.servo(6).present_position
    arm.emu.block(6, here + 100)  # the object between the jaws
    arm.c.command(arm.now(), ["gripper"], [(0.2, [gripper.to_rad(here + 700)])])
    arm.run(5.0, until=lambda r: arm.c.health["gripper"].backed_off)
    assert "gripper stall" in arm.c.health["gripper"].backoff_reason
    assert arm.emu.servo(6).get("Torque_Limit") == 500  # the node configured the gripper's limit
    arm.run(5.0, until=lambda r: abs(r.goals["gripper"] - gripper.to_rad(here + 100)) < 0.02)
    assert arm.c.state == ArmState.ENABLED
    assert abs(arm.c.goals["gripper"] - gripper.to_rad(here + 100)) < 0.02


def test_voltage_error_is_reported_and_motion_continues(arm):
    enabled(arm)
    arm.emu.faults.set_error_bits(1, ErrorBit.VOLTAGE)
    arm.c.command(arm.now(), ["shoulder_pan"], [(0.1, [arm.c.goals["shoulder_pan"] + 0.1])])
    arm.run(
        5.0, until=lambda r: arm.c.plan is None and r.goals["shoulder_pan"] == arm.c.targets["shoulder_pan"]
    )
    assert arm.c.state == ArmState.ENABLED
    assert arm.c.goals["shoulder_pan"] == pytest.approx(arm.c.targets["shoulder_pan"])
    pan = next(r for r in arm.c.reports() if r.name.endswith("shoulder_pan"))
    assert pan.level == 1 and "VOLTAGE" in pan.message


@pytest.mark.parametrize("fault", ["corrupt", "reorder", "duplicate", "drop"])
def test_transient_bus_faults_keep_the_arm_running(arm, fault):
    enabled(arm)
    faults = arm.emu.faults
    {
        "corrupt": lambda: faults.corrupt_probability(0.2, seed=1),
        "reorder": faults.reorder_replies,
        "duplicate": faults.duplicate_replies,
        "drop": lambda: faults.drop_next(3),
    }[fault]()
    arm.c.command(arm.now(), ["wrist_roll"], [(0.3, [arm.c.goals["wrist_roll"] + 0.2])])
    arm.run(0.4)
    arm.run(
        5.0,
        until=lambda r: (
            arm.c.plan is None and r.goals and r.goals["wrist_roll"] == arm.c.targets["wrist_roll"]
        ),
    )
    assert arm.c.state == ArmState.ENABLED
    published = [r.positions for r in arm.results if r.positions is not None]
    assert len(published) > len(arm.results) / 2
    assert arm.c.goals["wrist_roll"] == pytest.approx(arm.c.targets["wrist_roll"])
    stats = arm.c.bus.stats
    values = report(arm.c, "bus").values
    if fault in ("corrupt", "drop"):
        assert stats.corrupt + stats.timeouts > 0 and stats.retries > 0
        assert int(values["corrupt"]) + int(values["timeouts"]) > 0 and int(values["retries"]) > 0
    if fault == "duplicate":
        assert int(values["duplicates"]) + int(values["flushes"]) > 0


def test_silent_servo_with_torque_on_is_unrecoverable(arm):
    enabled(arm)
    arm.emu.faults.silence(4)
    arm.run(5.0, until=lambda r: r.state == ArmState.FAULT)
    assert arm.c.state == ArmState.FAULT and "servo 4" in arm.c.fault_message
    assert all(r.positions is None for r in arm.results[-3:])  # never a stale/zero wrist_flex position
    assert not any(arm.emu.servo(i).torque_enabled for i in (1, 2, 3, 5, 6))
    assert report(arm.c, "wrist_flex").level == 2 and "not answering" in report(arm.c, "wrist_flex").message
    arm.emu.faults.unsilence(4)
    arm.run(0.05)
    assert arm.c.state == ArmState.FAULT  # latched until someone asks for torque again
    ok, message = arm.c.enable_torque()
    assert ok, message


def test_usb_drop_reconnects_and_resumes_holding(arm):
    enabled(arm)
    target = arm.c.goals["gripper"] + 0.15
    arm.c.command(arm.now(), ["gripper"], [(0.0, [target])])
    arm.run(0.2)
    arm.emu.disconnect()
    arm.run(0.2)
    assert arm.c.state == ArmState.DISCONNECTED
    assert arm.results[-1].positions is None and arm.results[-1].goals is None
    assert report(arm.c, "bus").level == 2 and "disconnected" in report(arm.c, "bus").message
    arm.emu.reconnect()
    arm.run(5.0, until=lambda r: r.state == ArmState.ENABLED)
    assert arm.c.state == ArmState.ENABLED
    arm.run(5.0, until=lambda r: r.goals and r.goals["gripper"] == pytest.approx(target))
    assert arm.c.goals["gripper"] == pytest.approx(target)
    assert arm.emu.servo(6).torque_enabled
    assert arm.c.bus.stats.reconnects >= 1


def test_shutdown_disables_torque(arm):
    enabled(arm)
    arm.c.shutdown(torque_off=True)
    assert not any(arm.emu.servo(i).torque_enabled for i in range(1, 7))


def test_leader_reads_with_torque_off():
    with BusEmulator(preset="so101_leader") as emu:
        emu.servo(1).set("Torque_Enable", 1)
        leader = LeaderArm(
            FeetechBus(emu.port, timeout_ms=40.0), preset_joints("so101_leader"), fast_safety()
        )
        assert connect(leader)
        assert not emu.servo(1).torque_enabled
        emu.servo(1).set_physical_position(2500)
        result = leader.step()
        pan = leader.joints["shoulder_pan"]
        assert result.positions["shoulder_pan"] == pytest.approx(pan.to_rad(2500))
        emu.faults.silence(2)
        assert leader.step().positions is None
        leader.shutdown()


def test_joint_conversion_matches_the_calibration_module():
    from so100_driver.calibration import ArmCalibration, MotorCalibration, raw_to_radians

    joints = [*preset_joints(), Joint("inverted", 7, 1000, 3000, 12, drive_mode=1)]
    cal = ArmCalibration(
        {
            j.name: MotorCalibration(j.servo_id, j.drive_mode, j.homing_offset, j.range_min, j.range_max)
            for j in joints
        }
    )
    for raw in (0, 1000, 2047, 2500, 4095):
        expected = raw_to_radians([raw] * len(joints), cal)
        for joint, value in zip(joints, expected, strict=True):
            assert joint.to_rad(raw) == pytest.approx(value, abs=1e-12)
            if joint.range_min <= raw <= joint.range_max:
                assert joint.to_raw(joint.to_rad(raw)) == raw
