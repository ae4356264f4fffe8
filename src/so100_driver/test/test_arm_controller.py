"""ROS-free follower/leader logic against the emulator (real scservo_sdk over a real pty).

Every test audits the goals that really reached the emulated servos: inside the calibrated range and never
more than ``max_step`` from where the shaft was (the ``goal_audit`` fixture of conftest.py).
"""

import math
import time

import pytest

from so100_driver.arm import (
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

MAX_STEP = 0.05  # rad from the measured position
MAX_VELOCITY = 2.0  # rad/s: 0.02 rad per 10 ms cycle
STEP_RAD = 2 * math.pi / 4095


def preset_joints(preset="so101_follower"):
    return [
        Joint(m.name, m.motor_id, m.range_min, m.range_max, m.homing_offset, is_gripper=m.name == "gripper")
        for m in preset_motors(preset)
    ]


def fast_safety(**overrides):
    values = dict(
        max_step=MAX_STEP,
        max_velocity=MAX_VELOCITY,
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
    """Runs control cycles at ~100 Hz and audits every goal the servos received (range, ``max_step``)."""

    def __init__(self, emu, controller, audit):
        self.emu = emu
        self.c = controller
        self.audit = audit
        self.t0 = time.monotonic()
        self.results = []

    def now(self):
        return time.monotonic() - self.t0

    def run(self, seconds, until=None, hold_only=False):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            result = self.c.step(self.now())
            self.results.append(result)
            self.audit.check(hold_only)
            if result.goals is not None:
                for name, goal in result.goals.items():
                    joint = self.c.joints[name]
                    assert joint.lower - 1e-9 <= goal <= joint.upper + 1e-9, (name, goal)
            if until is not None and until(result):
                return result
            time.sleep(0.008)
        return None

    def enable(self):
        ok, message = self.c.enable_torque(self.now())
        assert ok, message
        self.audit.check(hold_only=True)  # torque-on holds where each joint is
        return self

    def truth(self):
        """Raw Present_Position of every joint, read from the emulator."""
        return {n: self.emu.servo(j.servo_id).present_position for n, j in self.c.joints.items()}


@pytest.fixture
def emu():
    with BusEmulator(preset="so101_follower") as emulator:
        yield emulator


def connect(link, attempts=3):
    """Connect, tolerating a starved emulator thread on a heavily loaded test machine."""
    return any(link.connect() for _ in range(attempts))


def make_controller(emu, timeout_ms=100.0, budget_ms=200.0, **safety):
    bus = FeetechBus(emu.port, timeout_ms=timeout_ms, retries=2, retry_budget_ms=budget_ms)
    return ArmController(bus, preset_joints(), fast_safety(**safety))


@pytest.fixture
def make_arm(emu, goal_audit):
    """``make_arm(**controller options)`` -> a connected :class:`Harness`; shut down after the test."""
    made = []

    def make(**options):
        controller = make_controller(emu, **options)
        assert connect(controller), controller.connect_error
        made.append(controller)
        return Harness(emu, controller, goal_audit(emu, preset_joints(), controller.safety.max_step))

    yield make
    for controller in made:
        controller.shutdown()


@pytest.fixture
def arm(make_arm):
    return make_arm()


def report(controller, suffix):
    """The diagnostic status whose name ends with ``suffix`` (e.g. "bus", "gripper")."""
    return next(r for r in controller.reports() if r.name.endswith(suffix))


def enabled(arm):
    return arm.enable()


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
    ok, message = controller.enable_torque(0.0)
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
    assert 0 < moved <= arm.c.step_per_cycle * len(arm.results) + 1e-9
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


def test_blocked_joint_backs_off_and_holds(make_arm):
    # a large max_step lets the joint push hard enough into the obstacle to overload it
    arm = enabled(make_arm(max_step=0.6))
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


def test_gripper_squeezing_an_object_stops_pushing(make_arm):
    """Torque_Limit caps the gripper's load at 50 %, so the stall guard (current + position error) acts
    (with a max_step large enough to let the gripper lag its goal by more than the stall error)."""
    arm = enabled(make_arm(max_step=0.3))
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
    arm.enable()


def test_usb_drop_mid_trajectory_reconnects_holding_where_the_arm_is(arm):
    """Item 4: the servos lose power with the adapter; joints sag; the arm must not drive back."""
    enabled(arm)
    lift, gripper = arm.c.joints["shoulder_lift"], arm.c.joints["gripper"]
    start = dict(arm.c.goals)
    arm.c.command(
        arm.now(),
        ["shoulder_lift", "gripper"],
        [
            (0.3, [start["shoulder_lift"] + 0.2, start["gripper"] + 0.15]),
            (1.0, [start["shoulder_lift"] + 0.6, 0.6]),
        ],
    )
    arm.run(0.2)
    arm.emu.disconnect()
    arm.emu.power_cycle()  # the adapter and the servos lost power together: torque off, joints limp
    sagged = {2: 1500, 6: 2600}  # where gravity and the operator left them, inside their ranges
    for servo_id, raw in sagged.items():
        arm.emu.servo(servo_id).set_physical_position(raw)
    arm.run(0.2)
    assert arm.c.state == ArmState.DISCONNECTED
    assert arm.results[-1].positions is None and arm.results[-1].goals is None
    assert report(arm.c, "bus").level == 2 and "disconnected" in report(arm.c, "bus").message
    arm.emu.reconnect()
    arm.run(5.0, until=lambda r: r.state == ArmState.ENABLED)
    assert arm.c.state == ArmState.ENABLED and arm.c.plan is None
    assert arm.c.epoch == 2 and arm.emu.servo(6).torque_enabled
    arm.audit.check(hold_only=True)  # the torque-on after the reconnect held where the joints were
    arm.run(1.0, hold_only=True)  # the rest of the old trajectory is gone: nothing moves
    assert abs(arm.emu.servo(2).present_position - sagged[2]) <= 2
    assert abs(arm.emu.servo(6).present_position - sagged[6]) <= 2
    assert arm.c.goals["shoulder_lift"] == pytest.approx(lift.to_rad(sagged[2]), abs=2 * STEP_RAD)
    assert arm.c.goals["gripper"] == pytest.approx(gripper.to_rad(sagged[6]), abs=2 * STEP_RAD)
    assert arm.c.bus.stats.reconnects >= 1
    # the arm moves again only on a command issued after the reconnect
    with pytest.raises(CommandError, match="before torque was last enabled"):
        arm.c.command(arm.now(), ["gripper"], [(0.0, [0.3])], start_time=arm.c.enabled_since - 0.05)
    arm.c.command(arm.now(), ["gripper"], [(0.0, [arm.c.goals["gripper"] + 0.1])], start_time=arm.now())
    arm.run(1.0)
    assert arm.emu.servo(6).present_position > sagged[6] + 40


def test_commands_only_move_the_joints_as_far_as_max_step_from_where_they_are(arm):
    enabled(arm)
    here = arm.emu.servo(3).present_position
    arm.emu.block(3, here + 10)  # the joint stops 10 steps on
    elbow = arm.c.joints["elbow_flex"]
    arm.c.command(arm.now(), ["elbow_flex"], [(0.1, [elbow.to_rad(here + 900)])])
    arm.run(1.0)
    lag = arm.c.goals["elbow_flex"] - elbow.to_rad(arm.emu.servo(3).present_position)
    assert 0 < lag <= MAX_STEP + 2 * STEP_RAD  # it leans on the obstacle, it does not push on
    assert abs(arm.emu.servo(3).load) < 250


@pytest.mark.parametrize("stall_ms", [35, 60, 100])
def test_torque_on_during_an_adapter_stall_holds_where_the_arm_is(make_arm, stall_ms):
    """Item 1: the adapter stalls on the calibration check's Max_Position_Limit read (real bus timing).
    Torque-on either holds the measured pose or is refused; no joint is driven to its limit."""
    arm = make_arm(timeout_ms=30.0, budget_ms=40.0)
    before = arm.truth()
    arm.emu.faults.stall_replies(stall_ms / 1000, address=11)
    ok, message = arm.c.enable_torque(arm.now())
    arm.audit.check(hold_only=True)
    if ok:
        arm.run(0.3, hold_only=True)
        assert arm.c.state == ArmState.ENABLED
    else:
        assert "calibration" in message and not any(arm.emu.servo(i).torque_enabled for i in range(1, 7))
    after = arm.truth()
    assert all(abs(after[n] - before[n]) <= 2 for n in before), (before, after)


def test_torque_on_just_outside_the_range_holds_within_max_step(arm):
    """Item 2: a joint a little (< max_step) beyond its calibrated range is held at the range's edge."""
    wrist = arm.c.joints["wrist_flex"]
    arm.emu.servo(4).set_physical_position(wrist.range_max + 12)  # 0.018 rad < max_step
    ok, message = arm.c.enable_torque(arm.now())
    assert ok, message
    writes = arm.audit.check()
    assert {w.goal for w in writes if w.servo_id == 4} == {wrist.range_max}
    arm.run(0.3)
    assert abs(arm.emu.servo(4).present_position - wrist.range_max) <= 2


def test_a_joint_that_sagged_out_of_its_range_keeps_torque_off_after_a_reconnect(arm):
    """Item 4 with item 2: while unpowered, a joint is pushed far beyond its calibrated range; after the
    reconnect the arm writes no goal and leaves torque off, saying which joint and what to do."""
    enabled(arm)
    wrist = arm.c.joints["wrist_flex"]
    arm.emu.disconnect()
    arm.emu.power_cycle()
    arm.emu.servo(4).set_physical_position(wrist.range_max + 150)
    arm.run(0.2)
    assert arm.c.state == ArmState.DISCONNECTED
    written = len(arm.emu.goal_writes())
    arm.emu.reconnect()
    arm.run(2.0, until=lambda r: arm.c.bus.stats.reconnects >= 1 and r.state != ArmState.DISCONNECTED)
    arm.run(0.5)
    assert arm.c.state in (ArmState.IDLE, ArmState.FAULT), arm.c.state
    assert not any(arm.emu.servo(i).torque_enabled for i in range(1, 7))
    assert len(arm.emu.goal_writes()) == written, arm.emu.goal_writes()[written:]
    (why,) = [e for e in arm.c.events if e.startswith("reconnected, but torque stays off")]
    assert "wrist_flex" in why and "move it back into its range by hand" in why
    assert abs(arm.emu.servo(4).present_position - (wrist.range_max + 150)) <= 2


def test_torque_on_far_outside_the_range_is_refused(arm):
    """Item 2: more than max_step outside: no goal is written, torque stays off, the message says why."""
    wrist = arm.c.joints["wrist_flex"]
    arm.emu.servo(4).set_physical_position(wrist.range_max + 150)
    ok, message = arm.c.enable_torque(arm.now())
    assert not ok
    assert "wrist_flex" in message and f"{wrist.range_min}..{wrist.range_max}" in message
    assert "move it back into its range by hand" in message
    assert arm.audit.check() == []
    assert not any(arm.emu.servo(i).torque_enabled for i in range(1, 7))
    assert arm.c.state == ArmState.IDLE


def test_torque_on_refuses_positions_that_change_between_two_reads(arm, monkeypatch):
    reads = iter([{"shift": 0}, {"shift": 200}])
    original = arm.c._read_positions

    def moving_read():
        fresh = original()
        shift = next(reads, {"shift": 0})["shift"]
        return {n: v + shift / 651.9 if n == "elbow_flex" else v for n, v in fresh.items()}

    monkeypatch.setattr(arm.c, "_read_positions", moving_read)
    ok, message = arm.c.enable_torque(arm.now())
    assert not ok and "elbow_flex" in message and "hold the arm still" in message


def test_re_enabling_after_a_fault_holds_the_sagged_pose(arm):
    """Item 3: torque returns after a fault; the arm stays where it sagged to; only new commands move it."""
    enabled(arm)
    elbow = arm.c.joints["elbow_flex"]
    start = arm.c.goals["elbow_flex"]
    issued = arm.now()
    arm.c.command(issued, ["elbow_flex"], [(2.0, [start - 1.0])], start_time=issued)
    arm.run(0.3)
    arm.emu.servo(5).set_temperature(66)
    arm.run(5.0, until=lambda r: r.state == ArmState.FAULT)
    assert arm.c.state == ArmState.FAULT
    arm.emu.servo(3).set_physical_position(elbow.range_min + 300)  # limp: it sags
    arm.emu.servo(5).set_temperature(40)
    sagged = arm.truth()
    arm.enable()
    arm.run(0.5, hold_only=True)
    assert arm.truth() == pytest.approx(sagged, abs=2)
    with pytest.raises(CommandError, match="before torque was last enabled"):
        arm.c.command(arm.now(), ["elbow_flex"], [(2.0, [start - 1.0])], start_time=issued)
    assert arm.c.plan is None


def test_a_servo_that_drops_its_own_torque_is_a_fault(arm):
    """Item 8: Torque_Enable is read back; a servo that let go is not reported ENABLED."""
    enabled(arm)
    arm.run(0.1)
    arm.emu.servo(3).release_torque()
    arm.run(2.0, until=lambda r: r.state == ArmState.FAULT)
    assert arm.c.state == ArmState.FAULT
    assert "servo 3 (elbow_flex) dropped its torque by itself" in arm.c.fault_message
    assert not any(arm.emu.servo(i).torque_enabled for i in range(1, 7))


def test_negative_gripper_current_is_not_a_stall(make_arm):
    """Item 8: closing the gripper draws a negative current; read unsigned it was a false stall."""
    arm = enabled(make_arm(max_step=0.3, gripper_stall_error_rad=0.01))
    gripper = arm.c.goals["gripper"]
    arm.c.command(arm.now(), ["gripper"], [(0.4, [gripper + 1.2]), (0.8, [gripper + 0.2])])
    currents = []
    for _ in range(100):
        arm.run(0.01)
        tel = arm.c.health["gripper"].telemetry
        currents.append(tel.current if tel else 0)
    assert min(currents) < 0  # it did draw a negative current
    assert not arm.c.health["gripper"].backed_off and arm.c.state == ArmState.ENABLED


def test_effort_is_unknown_until_every_load_was_read(arm):
    """Item 8: no effort (rather than 0.0) until the telemetry of every joint has been read."""
    first = arm.c.step(arm.now())
    assert first.positions is not None and first.efforts is None
    arm.run(0.2)
    assert arm.results[-1].efforts is not None


def test_a_lost_goal_write_is_taken_from_the_read_back(arm):
    enabled(arm)
    pan = arm.c.joints["shoulder_pan"]
    arm.emu.servo(1).set("Goal_Position", arm.emu.servo(1).present_position + 8)  # what a lost write leaves
    arm.run(0.2)
    assert arm.c.goal_readback_mismatches >= 1
    assert pan.to_raw(arm.c.goals["shoulder_pan"]) == arm.emu.servo(1).get("Goal_Position")


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
    from smolvla_common.calibration import ArmCalibration, MotorCalibration, raw_to_radians

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
