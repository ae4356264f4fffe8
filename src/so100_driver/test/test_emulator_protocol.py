"""Protocol helpers (pure functions) checked against the worked examples of the Feetech protocol and the
SDK's own encoders, plus emulator options that need no fault injection."""

from __future__ import annotations

import time

import pytest
import scservo_sdk as scs

from so100_driver.emulator import BusEmulator, PhysicsParams
from so100_driver.emulator.sdk_client import TolerantPortHandler
from so100_driver.protocol import (
    CONTROL_TABLE,
    ErrorBit,
    Instruction,
    PacketParser,
    decode_error_bits,
    decode_register,
    decode_sign_magnitude,
    describe_error_bits,
    encode_register,
    encode_sign_magnitude,
    instruction_packet,
    register,
    status_packet,
)

SYNC_WRITE_EXAMPLE = "ff ff fe 0a 83 2a 02 01 00 08 02 00 08 35"  # goal 2048 to ids 1 and 2

DEADLINE_MS = 150.0  # reply deadline: generous, the test machine may be loaded


@pytest.mark.parametrize(
    ("servo_id", "instruction", "params", "expected"),
    [
        (1, Instruction.READ, [56, 2], "ff ff 01 04 02 38 02 be"),
        (1, Instruction.WRITE, [40, 1], "ff ff 01 04 03 28 01 ce"),
        (0xFE, Instruction.SYNC_READ, [56, 2, 1, 2, 3, 4, 5, 6], "ff ff fe 0a 82 38 02 01 02 03 04 05 06 26"),
        (
            0xFE,
            Instruction.SYNC_WRITE,
            [42, 2, 1, 0, 8, 2, 0, 8],
            "ff ff fe 0a 83 2a 02 01 00 08 02 00 08 35",
        ),
    ],
)
def test_instruction_packets_match_worked_examples(servo_id, instruction, params, expected):
    assert instruction_packet(servo_id, instruction, bytes(params)).hex(" ") == expected


def test_sign_magnitude_matches_the_sdk():
    for value, bit in ((-5, 11), (2047, 11), (-2047, 11), (-1000, 15), (300, 10), (-300, 10), (0, 15)):
        word = encode_sign_magnitude(value, bit)
        assert word == scs.SCS_TOSCS(value, bit)
        assert decode_sign_magnitude(word, bit) == value == scs.SCS_TOHOST(word, bit)
    with pytest.raises(ValueError, match="2048 does not fit in 11 bits"):
        encode_sign_magnitude(-2048, 11)


def test_register_encoding():
    offset = register("Homing_Offset")
    assert offset.address == 31 and offset.size == 2 and offset.eeprom and offset.sign_bit == 11
    assert encode_register(offset, -300) == bytes([300 & 0xFF, (300 >> 8) | 0x08])
    assert decode_register(CONTROL_TABLE["Present_Load"], bytes([0x20, 0x07])) == -(0x0720 & 0x3FF)
    with pytest.raises(ValueError, match="Torque_Enable"):
        encode_register(CONTROL_TABLE["Torque_Enable"], 300)
    with pytest.raises(KeyError, match="known: Firmware_Major_Version"):
        register("Goal_Speed")


def test_error_bits_are_all_named():
    assert decode_error_bits(0x25) == ["VOLTAGE", "OVERHEAT", "OVERLOAD"]
    assert decode_error_bits(0x10) == ["BIT4"]
    assert "overload protection" in describe_error_bits(ErrorBit.OVERLOAD)
    assert describe_error_bits(0) == "no error"


def test_parser_resynchronises_and_drops_corrupt_frames():
    good = status_packet(3, 0x20, b"\x01\x02")
    bad = bytearray(instruction_packet(1, Instruction.PING))
    bad[-1] ^= 0xFF
    parser = PacketParser()
    stream = b"\x00\xff" + bytes(bad) + b"\xff" + good
    packets = [p for chunk in (stream[:5], stream[5:9], stream[9:]) for p in parser.feed(chunk)]
    assert [(p.servo_id, p.code, p.params) for p in packets] == [(3, 0x20, b"\x01\x02")]
    assert parser.corrupt_frames >= 1


def test_unwrapped_present_position_reproduces_values_above_4095():
    """Firmware that does not wrap after the offset reports e.g. 4368 (lerobot#1296)."""
    with BusEmulator(ids=(5,), params=PhysicsParams(wrap_present=False)) as emu:
        servo = emu.servo(5)
        servo.set("Homing_Offset", -300)
        servo.set_encoder_position(4068)
        port = TolerantPortHandler(emu.port, DEADLINE_MS)
        assert port.openPort()
        try:
            assert scs.PacketHandler(0).read2ByteTxRx(port, 5, 56)[:2] == (4368, scs.COMM_SUCCESS)
        finally:
            port.closePort()
    with BusEmulator(ids=(5,)) as emu:
        emu.servo(5).set("Homing_Offset", -300)
        emu.servo(5).set_encoder_position(4068)
        assert emu.servo(5).present_position == 4368 - 4096


def test_link_path_must_not_replace_a_real_file(tmp_path):
    target = tmp_path / "ttyACM0"
    target.write_text("not a symlink")
    with pytest.raises(ValueError, match="refusing to replace"):
        BusEmulator(link_path=target)
    assert target.read_text() == "not a symlink"


def test_simulated_wire_timing_slows_replies():
    with BusEmulator(ids=(1,), simulate_timing=True) as emu:
        emu.servo(1).set("Return_Delay_Time", 250)  # factory value: 500 µs per reply
        port = TolerantPortHandler(emu.port, DEADLINE_MS)
        assert port.openPort()
        try:
            start = time.perf_counter()
            for _ in range(10):
                assert scs.PacketHandler(0).read2ByteTxRx(port, 1, 56)[1] == scs.COMM_SUCCESS
            assert time.perf_counter() - start >= 10 * (500e-6 + 16 * 10e-6)
        finally:
            port.closePort()
