"""The arm-safety rule under random interleavings of everything that interrupts an arm.

A seeded random schedule mixes policy motion (the real executor core fed by a fake policy with random
latency), adapter stalls, split and corrupted replies, USB drops with joints sagging while unpowered,
servo faults (heat, a servo dropping its torque, a silent servo),
e-stop/start, torque toggles and replays of commands stamped before the latest torque-on, against the
emulator through the real ``scservo_sdk``. Throughout, every Goal_Position that reaches a servo is checked
(``goal_audit``):

* inside the joint's calibrated range and within ``max_step`` of where the shaft is, and after every
  cycle each goal a servo holds is within ``max_step`` of its measured position;
* after every torque-on, equal to where the shaft is (the arm holds) until a command stamped after that
  torque-on was accepted; the first such command starts from the measured pose;
* no command stamped before the latest torque-on is ever accepted, and no chunk computed from an
  observation made before it is ever executed.
"""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from smolvla_common.executor_core import ArmReport, Chunk, ChunkExecutorCore, ExecutorConfig
from so100_driver.arm import ArmController, ArmState, CommandError, Joint, SafetyConfig
from so100_driver.bus import FeetechBus
from so100_driver.emulator.bus_emulator import BusEmulator
from so100_driver.emulator.presets import preset_motors

MAX_STEP = 0.08
EXECUTOR_EVERY = 3  # executor tick every 3 control cycles: 33 Hz next to the arm's 100 Hz
CHUNK_DT = 1 / 30


def joints() -> list[Joint]:
    return [
        Joint(m.name, m.motor_id, m.range_min, m.range_max, m.homing_offset, is_gripper=m.name == "gripper")
        for m in preset_motors("so101_follower")
    ]


class FakePolicy:
    """Answers a request after a random latency with a smooth random chunk starting at the observation."""

    def __init__(self, rng: random.Random, lower: np.ndarray, upper: np.ndarray) -> None:
        self.rng, self.lower, self.upper = rng, lower, upper
        self.pending: list[tuple[float, Chunk]] = []
        self.next_id = 1

    def request(self, now: float, request_id: int, observation: np.ndarray, stamp: float) -> None:
        n = 40
        direction = np.array([self.rng.uniform(-1, 1) for _ in observation])
        ramp = np.minimum(np.arange(n) * CHUNK_DT, 0.6)[:, None] * direction * 0.8
        values = np.clip(observation + ramp, self.lower, self.upper)
        chunk = Chunk(
            self.next_id,
            request_id,
            stamp,
            CHUNK_DT,
            tuple(j.name for j in joints()),
            np.arange(n) * CHUNK_DT,
            values,
        )
        self.next_id += 1
        self.pending.append((now + self.rng.uniform(0.0, 0.3), chunk))

    def due(self, now: float) -> list[Chunk]:
        ready = [c for t, c in self.pending if t <= now]
        self.pending = [(t, c) for t, c in self.pending if t > now]
        return ready


class Scenario:
    def __init__(self, seed: int, emu: BusEmulator, audit) -> None:
        self.rng = random.Random(seed)
        self.emu = emu
        self.audit = audit
        self.joints = joints()
        safety = SafetyConfig(
            max_step=MAX_STEP,
            max_velocity=2.0,
            silent_fault_s=0.3,
            reconnect_period_s=0.05,
            overload_backoff_s=0.05,
            hard_fault_s=0.4,
        )
        bus = FeetechBus(emu.port, timeout_ms=50.0, retries=2, retry_budget_ms=100.0)
        self.arm = ArmController(bus, self.joints, safety)
        names = tuple(j.name for j in self.joints)
        lower = np.array([j.lower for j in self.joints])
        upper = np.array([j.upper for j in self.joints])
        config = ExecutorConfig(
            joint_names=names,
            rate_hz=100 / EXECUTOR_EVERY,
            max_step_rad=0.05,
            joint_min_rad=tuple(lower),
            joint_max_rad=tuple(upper),
            joint_state_timeout_s=0.3,
        )
        self.executor = ChunkExecutorCore(config)
        self.policy = FakePolicy(self.rng, lower, upper)
        self.t0 = time.monotonic()
        self.names = names
        # what the checks track
        self.epoch_moved: dict[int, bool] = {}
        self.hold_pose: dict[int, np.ndarray] = {}
        self.accepted_commands = 0
        self.rejected_replays = 0
        self.events: list[str] = []
        self.chunks_taken = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    # --------------------------------------------------------------------------------- the loop
    def run(self, cycles: int) -> None:
        """``cycles`` control cycles (a count, not a duration: a busy machine gets the same events)."""
        assert self.arm.connect(self.now()), self.arm.connect_error
        ok, message = self.arm.enable_torque(self.now())
        assert ok, message
        self.executor.start(self.now())
        next_event = 50
        for cycle in range(cycles):
            now = self.now()
            result = self.arm.step(now)
            self.check(result)
            self.feed_executor(now, result, cycle)
            if cycle == next_event:
                self.random_event(now)
                next_event = cycle + self.rng.randint(30, 120)
            time.sleep(0.008)
        self.check_writes(self.arm.epoch)

    def check_writes(self, epoch: int) -> None:
        """Audit the goals written; before the epoch's first command, only towards the held pose."""
        hold = None
        if not self.epoch_moved.get(epoch, True):
            held = dict(zip(self.names, self.hold_pose[epoch], strict=True))
            hold = {j.servo_id: j.to_raw(held[j.name]) for j in self.joints}
        # enabled_since is this clock's time of the torque-on; the emulator's clock is time.monotonic()
        self.audit.check(hold=hold, hold_from=self.t0 + (self.arm.enabled_since or 0.0))

    def check(self, result) -> None:
        if result.goals is not None and result.positions is not None:
            lag = max(abs(result.goals[n] - result.positions[n]) for n in self.names)
            assert lag <= MAX_STEP + 1e-9, f"a goal is held {lag:.3f} rad from its joint"
        epoch = self.arm.epoch
        if epoch not in self.epoch_moved and self.arm.state == ArmState.ENABLED:
            self.epoch_moved[epoch] = False
            self.hold_pose[epoch] = np.array([self.arm.goals[n] for n in self.names])
        self.check_writes(epoch)

    def feed_executor(self, now: float, result, cycle: int) -> None:
        arm = self.arm
        report = ArmReport(
            arm.state == ArmState.ENABLED, arm.epoch, arm.enabled_since or 0.0, arm.status_message()
        )
        self.executor.on_arm_status(now, report)
        if result.positions is not None:
            positions = np.array([result.positions[n] for n in self.names])
            self.executor.on_joint_state(now, self.names, positions, stamp=now)
            self.last_observation = (positions, now)
        for chunk in self.policy.due(now):
            if self.executor.on_chunk(now, chunk).accepted:
                assert arm.enabled_since is not None and chunk.stamp >= arm.enabled_since, "stale chunk taken"
                self.chunks_taken += 1
        if cycle % EXECUTOR_EVERY:
            return
        tick = self.executor.tick(now)
        if tick.request is not None and hasattr(self, "last_observation"):
            self.policy.request(now, tick.request.request_id, *self.last_observation)
        if tick.command is not None:
            self.command(now, tick.command, stamp=now)

    def command(self, now: float, values: np.ndarray, stamp: float) -> None:
        epoch = self.arm.epoch
        try:
            self.arm.command(now, self.names, [(EXECUTOR_EVERY / 100, list(values))], start_time=stamp)
        except CommandError:
            return
        since = self.arm.enabled_since
        assert since is not None and stamp >= since, "a command stamped before the torque-on was accepted"
        if not self.epoch_moved.get(epoch, True):
            # the first command after a torque-on starts where the arm was held
            assert np.max(np.abs(values - self.hold_pose[epoch])) <= 0.05 + 1e-9, (values, self.hold_pose)
            self.epoch_moved[epoch] = True
        self.accepted_commands += 1

    # -------------------------------------------------------------------------------- events
    def random_event(self, now: float) -> None:
        rng, emu, arm = self.rng, self.emu, self.arm
        kind = rng.choice(
            [
                "stall",
                "split",
                "corrupt",
                "usb_drop",
                "heat",
                "drop_torque",
                "silence",
                "estop",
                "toggle",
                "replay",
            ]
        )
        self.events.append(kind)
        servo = rng.randint(1, 6)
        if kind == "stall":
            emu.faults.stall_replies(rng.uniform(0.035, 0.15))
        elif kind == "split":
            emu.faults.split_replies(rng.choice([None, 62, 16, 5]), gap_s=rng.uniform(0.001, 0.01))
        elif kind == "corrupt":
            emu.faults.corrupt_probability(rng.choice([0.0, 0.05, 0.2]), seed=rng.randint(0, 99))
        elif kind == "usb_drop":
            emu.disconnect()
            self.spin(rng.uniform(0.1, 0.4))
            if rng.random() < 0.7:  # the servos lost power too: limp, and they sag somewhere in range
                emu.power_cycle()
                self.sag(rng.sample(range(1, 7), rng.randint(1, 3)))
            emu.reconnect()
        elif kind == "heat":
            emu.servo(servo).set_temperature(70)
            self.spin(0.3)
            emu.servo(servo).set_temperature(30)
            self.re_enable()
        elif kind == "drop_torque":
            emu.servo(servo).release_torque()
            self.spin(0.2)
            self.sag([servo])
            self.re_enable()
        elif kind == "silence":
            emu.faults.silence(servo)
            self.spin(rng.uniform(0.05, 0.5))
            emu.faults.unsilence(servo)
            self.re_enable()
        elif kind == "estop":
            self.executor.estop(now)
            arm.disable_torque()
            self.sag(rng.sample(range(1, 7), 2))
            self.spin(0.2)
            self.re_enable()
            self.executor.start(self.now())
        elif kind == "toggle":
            arm.disable_torque()
            self.sag([servo])
            self.re_enable()
        elif kind == "replay" and arm.enabled_since is not None:
            old = arm.enabled_since - rng.uniform(0.001, 2.0)
            before = self.accepted_commands
            self.command(self.now(), np.array([j.upper for j in self.joints]), stamp=old)
            assert self.accepted_commands == before
            self.rejected_replays += 1

    def spin(self, seconds: float) -> None:
        """Keep the control loop (and the checks) running for a while."""
        end = time.monotonic() + seconds
        cycle = 1  # odd: the executor does not tick inside an event
        while time.monotonic() < end:
            now = self.now()
            result = self.arm.step(now)
            self.check(result)
            self.feed_executor(now, result, cycle)
            time.sleep(0.008)

    def sag(self, servo_ids) -> None:
        self.emu.wait_idle()  # goals already sent land before the instantaneous jump
        for servo_id in servo_ids:
            joint = next(j for j in self.joints if j.servo_id == servo_id)
            if not self.emu.servo(servo_id).torque_enabled:
                self.emu.servo(servo_id).set_physical_position(
                    self.rng.uniform(joint.range_min + 20, joint.range_max - 20)
                )

    def re_enable(self) -> None:
        for _ in range(20):
            if self.arm.state in (ArmState.IDLE, ArmState.FAULT):
                ok, _ = self.arm.enable_torque(self.now())
                if ok:
                    return
            self.spin(0.05)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_goal_beyond_max_step_and_no_motion_without_a_fresh_command(seed, goal_audit):
    with BusEmulator(preset="so101_follower") as emu:
        audit = goal_audit(emu, joints(), MAX_STEP, slack_steps=6.0)
        scenario = Scenario(seed, emu, audit)
        try:
            scenario.run(cycles=600)
        finally:
            scenario.arm.shutdown()
        # not vacuous: the arm did move, was interrupted many times and came back each time
        assert scenario.accepted_commands > 100, scenario.events
        assert audit.checked > 200
        assert scenario.arm.epoch >= 3, scenario.events
        assert sum(scenario.epoch_moved.values()) >= 2, (scenario.epoch_moved, scenario.events)
        assert scenario.chunks_taken > 5
