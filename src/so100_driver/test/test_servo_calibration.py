"""Where a LeRobot calibration lives on the servos: half-turn homing, the EEPROM check, and the unit
conversions against the emulator's ground truth read through the real scservo_sdk over a pty."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scservo_sdk as scs

from lerobot_files import LEROBOT_FILE, write_lerobot_file
from smolvla_common import calibration as cal
from so100_driver.emulator import BusEmulator
from so100_driver.emulator.sdk_client import TolerantPortHandler
from so100_driver.protocol import CONTROL_TABLE, decode_register, encode_register
from so100_driver.servo_calibration import compare_with_servos, eeprom_values, homing_offsets_for_middle

STEP_RAD = 2 * math.pi / 4095
DEADLINE_MS = 150.0  # reply deadline: generous, the test machine may be loaded


@pytest.fixture
def lerobot_file(tmp_path):
    return write_lerobot_file(tmp_path / "robots" / "so_follower" / "my_arm.json")


def test_half_turn_homing_and_seam_error():
    assert homing_offsets_for_middle({"a": 2047, "b": 100, "c": 4000}) == {"a": 0, "b": -1947, "c": 1953}
    with pytest.raises(ValueError, match=r"wrist_roll.*seam"):
        homing_offsets_for_middle({"wrist_roll": 4095 + 1})


# ---------------------------------------------------------------------- against the emulator
def _read(ph, port, servo_id, name):
    reg = CONTROL_TABLE[name]
    data, comm, _ = ph.readTxRx(port, servo_id, reg.address, reg.size)
    assert comm == scs.COMM_SUCCESS
    return decode_register(reg, data)


def test_published_positions_match_ground_truth_within_one_step(lerobot_file):
    c = cal.load_calibration(lerobot_file)
    with BusEmulator(calibration=lerobot_file) as emu:
        port = TolerantPortHandler(emu.port, DEADLINE_MS)
        assert port.openPort()
        ph = scs.PacketHandler(0)
        reader = scs.GroupSyncRead(port, ph, 56, 2)
        for servo_id in c.ids:
            reader.addParam(servo_id)
        rng = np.random.default_rng(1)
        try:
            for _ in range(10):
                truth_raw = rng.uniform(c.mins() + 1, c.maxs() - 1)
                for servo_id, raw in zip(c.ids, truth_raw, strict=True):
                    emu.servo(servo_id).set_physical_position(raw)  # the operator moves the limp arm
                assert reader.txRxPacket() == scs.COMM_SUCCESS
                raw = np.array([reader.getData(i, 56, 2) for i in c.ids])
                published = cal.raw_to_radians(raw, c)
                truth = cal.raw_to_radians([emu.servo(i).angle_raw for i in c.ids], c)
                assert np.max(np.abs(published - truth)) <= STEP_RAD
            # and commanded radians land within one step
            goal = cal.clamp_radians(rng.uniform(-1.0, 1.0, 6), c)
            writer = scs.GroupSyncWrite(port, ph, 42, 2)
            for servo_id, raw_goal in zip(c.ids, cal.radians_to_raw(goal, c), strict=True):
                assert ph.write1ByteTxRx(port, servo_id, 40, 1)[0] == scs.COMM_SUCCESS
                writer.addParam(servo_id, list(encode_register(CONTROL_TABLE["Goal_Position"], raw_goal)))
            assert writer.txPacket() == scs.COMM_SUCCESS
            assert emu.wait_idle()  # the sync write has no reply: let the emulator take it first
            emu.advance(3.0)
            reached = cal.raw_to_radians([emu.servo(i).angle_raw for i in c.ids], c)
            assert np.max(np.abs(reached - goal)) <= STEP_RAD
        finally:
            port.closePort()


def test_eeprom_comparison_names_what_differs(lerobot_file):
    c = cal.load_calibration(lerobot_file)
    with BusEmulator(calibration=lerobot_file) as emu:
        port = TolerantPortHandler(emu.port, DEADLINE_MS)
        assert port.openPort()
        ph = scs.PacketHandler(0)
        try:
            eeprom = {
                i: {
                    reg: _read(ph, port, i, reg)
                    for reg in ("Homing_Offset", "Min_Position_Limit", "Max_Position_Limit")
                }
                for i in c.ids
            }
        finally:
            port.closePort()
    assert eeprom == eeprom_values(c)
    assert compare_with_servos(c, eeprom) == []
    other = cal.ArmCalibration.from_json(LEROBOT_FILE.replace('"homing_offset": -612', '"homing_offset": 37'))
    del eeprom[6]
    problems = compare_with_servos(other, eeprom, file_hint="follower.json")
    assert problems == [
        "motor wrist_flex (id 4): Homing_Offset in servo EEPROM is -612, follower.json says 37 — "
        "re-run so100-calibrate, or point calibration_file at the right file",
        "motor gripper (id 6): no EEPROM reading (servo missing or not answering)",
    ]


def test_lerobot_procedure_on_the_emulator_survives_a_power_cycle():
    """LeRobot's half-turn homing + range recording, done by hand over the SDK with a scripted operator:
    the EEPROM written with Lock = 0 matches the resulting file after the servos lose power."""
    names = ["shoulder_pan", "gripper"]
    ids = [1, 6]
    middle_encoder = {1: 3500, 6: 600}  # where the operator holds each joint (raw encoder)
    sweep = {1: (-900, 850), 6: (-5, 1400)}  # travel around the middle pose, in steps
    with BusEmulator(ids=ids) as emu:
        port = TolerantPortHandler(emu.port, DEADLINE_MS)
        assert port.openPort()
        ph = scs.PacketHandler(0)

        def write(servo_id, name, value):
            reg = CONTROL_TABLE[name]
            data = list(encode_register(reg, value))
            assert ph.writeTxRx(port, servo_id, reg.address, reg.size, data) == (scs.COMM_SUCCESS, 0)

        try:
            for servo_id in ids:  # torque off, unlock, reset calibration
                write(servo_id, "Torque_Enable", 0)
                write(servo_id, "Lock", 0)
                for name, value in (
                    ("Homing_Offset", 0),
                    ("Min_Position_Limit", 0),
                    ("Max_Position_Limit", 4095),
                ):
                    write(servo_id, name, value)
                emu.servo(servo_id).set_encoder_position(middle_encoder[servo_id])
            raw = {n: _read(ph, port, i, "Present_Position") for n, i in zip(names, ids, strict=True)}
            offsets = homing_offsets_for_middle(raw)
            for name, servo_id in zip(names, ids, strict=True):
                write(servo_id, "Homing_Offset", offsets[name])
                assert _read(ph, port, servo_id, "Present_Position") == 2047
            ranges = {}
            for name, servo_id in zip(names, ids, strict=True):
                seen = []
                for delta in np.linspace(*sweep[servo_id], 25):
                    emu.servo(servo_id).set_physical_position(2047 + delta)
                    seen.append(_read(ph, port, servo_id, "Present_Position"))
                ranges[name] = (min(seen), max(seen))
            result = cal.ArmCalibration(
                {
                    n: cal.MotorCalibration(i, 0, offsets[n], *ranges[n])
                    for n, i in zip(names, ids, strict=True)
                }
            )
            for servo_id, registers in eeprom_values(result).items():
                for name, value in registers.items():
                    write(servo_id, name, value)
                write(servo_id, "Lock", 1)
            emu.power_cycle()
            eeprom = {
                i: {
                    r: _read(ph, port, i, r)
                    for r in ("Homing_Offset", "Min_Position_Limit", "Max_Position_Limit")
                }
                for i in ids
            }
        finally:
            port.closePort()
    assert compare_with_servos(result, eeprom) == []
    assert result.motor("shoulder_pan") == cal.MotorCalibration(1, 0, 3500 - 2047, 2047 - 900, 2047 + 850)
    assert result.motor("gripper").homing_offset == 600 - 2047
