"""Feetech STS3215 serial protocol: control table, instructions, error bits, encodings, packets.

Plain data and pure functions shared by the bus layer, the emulator and the calibration code; no I/O.

- ``CONTROL_TABLE``: register name -> :class:`Register` (address, size, EEPROM or RAM, writable,
  sign bit of sign-magnitude fields, power-up default of a stock STS3215).
- :class:`Instruction` codes, :class:`ErrorBit` flags with :func:`decode_error_bits` /
  :func:`describe_error_bits`.
- :func:`encode_sign_magnitude` / :func:`decode_sign_magnitude`, :func:`encode_register` /
  :func:`decode_register` (little-endian bytes <-> signed value for a named register).
- :func:`checksum`, :func:`instruction_packet`, :func:`status_packet` and :class:`PacketParser`
  (a stream parser that resynchronises on ``FF FF`` and drops corrupt frames, like a servo does).

Wire format (STS/SMS series, little-endian, ``PacketHandler(0)`` in ``scservo_sdk``)::

    instruction: FF FF id len inst params... chk      len = len(params) + 2
    status:      FF FF id len err  data...   chk      chk = ~(id + len + inst/err + sum(params)) & 0xFF
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MODEL_NUMBER_STS3215 = 777
RESOLUTION = 4096  # encoder steps per turn
MAX_RAW = RESOLUTION - 1
BROADCAST_ID = 0xFE
MAX_SERVO_ID = 0xFD
MAX_PACKET_LEN = 250  # the SDK rejects longer packets
HEADER = b"\xff\xff"
MEMORY_SIZE = 256


class Instruction(enum.IntEnum):
    """Instruction byte of an instruction packet."""

    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    RESET = 0x06  # classic manual; newer SDKs use 0x0A
    RESET_NEW = 0x0A
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83


class ErrorBit(enum.IntFlag):
    """Bits of the status-packet error byte and of the Status register (65)."""

    VOLTAGE = 0x01
    ANGLE = 0x02
    OVERHEAT = 0x04
    OVERCURRENT = 0x08
    OVERLOAD = 0x20


ERROR_DESCRIPTIONS: dict[ErrorBit, str] = {
    ErrorBit.VOLTAGE: "input voltage outside the Min/Max_Voltage_Limit window",
    ErrorBit.ANGLE: "magnetic encoder (angle sensor) fault",
    ErrorBit.OVERHEAT: "temperature above Max_Temperature_Limit",
    ErrorBit.OVERCURRENT: "over-current protection tripped",
    ErrorBit.OVERLOAD: "overload protection tripped (sustained high load, e.g. a stall)",
}


def decode_error_bits(error: int) -> list[str]:
    """Names of the error bits set in ``error`` (all of them, unlike the SDK's ``getRxPacketError``).

    Unknown bits are reported as ``BIT<n>``.
    """
    names = [bit.name for bit in ErrorBit if error & bit]
    known = 0
    for bit in ErrorBit:
        known |= int(bit)
    names += [f"BIT{n}" for n in range(8) if error & ~known & (1 << n)]
    return names


def describe_error_bits(error: int) -> str:
    """Human-readable list of the error bits, e.g. ``"OVERLOAD (overload protection tripped ...)"``."""
    parts = []
    for name in decode_error_bits(error):
        bit = ErrorBit.__members__.get(name)
        parts.append(f"{name} ({ERROR_DESCRIPTIONS[bit]})" if bit is not None else name)
    return ", ".join(parts) if parts else "no error"


@dataclass(frozen=True)
class Register:
    """One entry of the STS3215 control table."""

    name: str
    address: int
    size: int
    eeprom: bool
    writable: bool = True
    default: int = 0
    sign_bit: int | None = None

    @property
    def addresses(self) -> range:
        return range(self.address, self.address + self.size)


def _table(*rows: Register) -> dict[str, Register]:
    return {row.name: row for row in rows}


# Defaults: a stock STS3215 (7.4 V variant) straight from the factory, firmware 3.10.
CONTROL_TABLE: dict[str, Register] = _table(
    # EEPROM area (non-volatile; saved only while Lock = 0)
    Register("Firmware_Major_Version", 0, 1, True, False, 3),
    Register("Firmware_Minor_Version", 1, 1, True, False, 10),
    Register("Model_Number", 3, 2, True, False, MODEL_NUMBER_STS3215),
    Register("ID", 5, 1, True, True, 1),
    Register("Baud_Rate", 6, 1, True, True, 0),
    Register("Return_Delay_Time", 7, 1, True, True, 250),
    Register("Response_Status_Level", 8, 1, True, True, 1),
    Register("Min_Position_Limit", 9, 2, True, True, 0),
    Register("Max_Position_Limit", 11, 2, True, True, MAX_RAW),
    Register("Max_Temperature_Limit", 13, 1, True, True, 70),
    Register("Max_Voltage_Limit", 14, 1, True, True, 80),
    Register("Min_Voltage_Limit", 15, 1, True, True, 40),
    Register("Max_Torque_Limit", 16, 2, True, True, 1000),
    Register("Phase", 18, 1, True, True, 12),
    Register("Unloading_Condition", 19, 1, True, True, 44),
    Register("LED_Alarm_Condition", 20, 1, True, True, 47),
    Register("P_Coefficient", 21, 1, True, True, 32),
    Register("D_Coefficient", 22, 1, True, True, 32),
    Register("I_Coefficient", 23, 1, True, True, 0),
    Register("Minimum_Startup_Force", 24, 2, True, True, 16),
    Register("CW_Dead_Zone", 26, 1, True, True, 1),
    Register("CCW_Dead_Zone", 27, 1, True, True, 1),
    Register("Protection_Current", 28, 2, True, True, 500),
    Register("Angular_Resolution", 30, 1, True, True, 1),
    Register("Homing_Offset", 31, 2, True, True, 0, sign_bit=11),
    Register("Operating_Mode", 33, 1, True, True, 0),
    Register("Protective_Torque", 34, 1, True, True, 20),
    Register("Protection_Time", 35, 1, True, True, 200),
    Register("Overload_Torque", 36, 1, True, True, 80),
    Register("Velocity_P_Coefficient", 37, 1, True, True, 10),
    Register("Over_Current_Protection_Time", 38, 1, True, True, 200),
    Register("Velocity_I_Coefficient", 39, 1, True, True, 200),
    # RAM area (volatile; reset at power-up)
    Register("Torque_Enable", 40, 1, False, True, 0),
    Register("Acceleration", 41, 1, False, True, 0),
    Register("Goal_Position", 42, 2, False, True, 0, sign_bit=15),
    Register("Goal_Time", 44, 2, False, True, 0),
    Register("Goal_Velocity", 46, 2, False, True, 0, sign_bit=15),
    Register("Torque_Limit", 48, 2, False, True, 1000),
    Register("Lock", 55, 1, False, True, 1),
    Register("Present_Position", 56, 2, False, False, 0, sign_bit=15),
    Register("Present_Velocity", 58, 2, False, False, 0, sign_bit=15),
    Register("Present_Load", 60, 2, False, False, 0, sign_bit=10),
    Register("Present_Voltage", 62, 1, False, False, 74),
    Register("Present_Temperature", 63, 1, False, False, 25),
    Register("Status", 65, 1, False, False, 0),
    Register("Moving", 66, 1, False, False, 0),
    Register("Present_Current", 69, 2, False, False, 0, sign_bit=15),
    # Factory area (EEPROM)
    Register("Moving_Velocity_Threshold", 80, 1, True, True, 10),
    Register("DTs", 81, 1, True, True, 10),
    Register("Velocity_Unit_Factor", 82, 1, True, True, 1),
    Register("Hts", 83, 1, True, True, 0),
    Register("Maximum_Velocity_Limit", 84, 1, True, True, 254),
    Register("Maximum_Acceleration", 85, 1, True, True, 150),
    Register("Acceleration_Multiplier", 86, 1, True, True, 0),
)

REGISTERS_BY_ADDRESS: dict[int, Register] = {reg.address: reg for reg in CONTROL_TABLE.values()}
EEPROM_ADDRESSES: frozenset[int] = (
    frozenset(addr for reg in CONTROL_TABLE.values() if reg.eeprom for addr in reg.addresses)
    | frozenset(range(0, 40))
    | frozenset(range(80, 87))
)
READ_ONLY_ADDRESSES: frozenset[int] = frozenset(
    addr for reg in CONTROL_TABLE.values() if not reg.writable for addr in reg.addresses
) | frozenset({2, 64, 67, 68})

# Telemetry block read in one request: Torque_Enable .. Present_Current (addresses 40..70), so the torque
# state and the goal a servo really holds are read back with its position, load, temperature and current.
TELEMETRY_START = 40
TELEMETRY_LENGTH = 31


def register(name: str) -> Register:
    """Look up a register by name, with a clear error listing the valid names."""
    try:
        return CONTROL_TABLE[name]
    except KeyError:
        raise KeyError(f"unknown STS3215 register {name!r}; known: {', '.join(CONTROL_TABLE)}") from None


def encode_sign_magnitude(value: int, sign_bit: int) -> int:
    """Signed int -> sign-magnitude word (bit ``sign_bit`` is the sign, the bits below the magnitude)."""
    value = int(value)
    magnitude = abs(value)
    if magnitude >= (1 << sign_bit):
        raise ValueError(
            f"magnitude {magnitude} does not fit in {sign_bit} bits (sign bit {sign_bit}); "
            f"allowed range is ±{(1 << sign_bit) - 1}"
        )
    return magnitude | (1 << sign_bit) if value < 0 else magnitude


def decode_sign_magnitude(word: int, sign_bit: int) -> int:
    """Sign-magnitude word -> signed int. Bits above the sign bit are ignored."""
    word = int(word)
    magnitude = word & ((1 << sign_bit) - 1)
    return -magnitude if word & (1 << sign_bit) else magnitude


def to_unsigned(reg: Register, value: int) -> int:
    """Register value (signed where the register has a sign bit) -> the unsigned word stored on the servo."""
    if reg.sign_bit is not None:
        return encode_sign_magnitude(value, reg.sign_bit)
    value = int(value)
    if not 0 <= value < (1 << (8 * reg.size)):
        raise ValueError(f"{reg.name}: value {value} out of range 0..{(1 << (8 * reg.size)) - 1}")
    return value


def from_unsigned(reg: Register, word: int) -> int:
    """Unsigned word read from the servo -> register value (decoding the sign bit if any)."""
    return decode_sign_magnitude(word, reg.sign_bit) if reg.sign_bit is not None else int(word)


def encode_register(reg: Register, value: int) -> bytes:
    """Register value -> little-endian bytes as on the wire."""
    return to_unsigned(reg, value).to_bytes(reg.size, "little")


def decode_register(reg: Register, data: bytes | Iterable[int]) -> int:
    """Little-endian bytes -> register value."""
    return from_unsigned(reg, int.from_bytes(bytes(data)[: reg.size], "little"))


def checksum(body: bytes | Iterable[int]) -> int:
    """Checksum over id, len, instruction/error and parameters (everything after ``FF FF``)."""
    return (~sum(body)) & 0xFF


def instruction_packet(servo_id: int, instruction: int, params: bytes = b"") -> bytes:
    """Build an instruction packet."""
    body = bytes([servo_id, len(params) + 2, instruction]) + bytes(params)
    return HEADER + body + bytes([checksum(body)])


def status_packet(servo_id: int, error: int, data: bytes = b"") -> bytes:
    """Build a status (reply) packet."""
    body = bytes([servo_id, len(data) + 2, error & 0xFF]) + bytes(data)
    return HEADER + body + bytes([checksum(body)])


@dataclass(frozen=True)
class Packet:
    """A parsed packet: ``code`` is the instruction (requests) or the error byte (replies)."""

    servo_id: int
    code: int
    params: bytes


class PacketParser:
    """Incremental parser for a byte stream of packets.

    Resynchronises on ``FF FF``; a frame with an impossible id/length or a wrong checksum is dropped
    byte by byte (a real servo simply does not answer it). ``corrupt_frames`` counts dropped frames.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.corrupt_frames = 0

    def feed(self, data: bytes) -> Iterator[Packet]:
        """Add bytes and yield every complete, valid packet."""
        self._buffer += data
        buf = self._buffer
        while True:
            start = buf.find(HEADER)
            if start < 0:
                # keep a trailing FF, it may be the first half of a header
                del buf[: max(0, len(buf) - 1)]
                return
            del buf[:start]
            if len(buf) < 4:
                return
            servo_id, length = buf[2], buf[3]
            if servo_id == 0xFF:  # FF FF FF ...: the header starts one byte later
                del buf[:1]
                continue
            if length < 2 or length > MAX_PACKET_LEN:
                self.corrupt_frames += 1
                del buf[:1]
                continue
            total = length + 4
            if len(buf) < total:
                return
            frame = bytes(buf[:total])
            if checksum(frame[2:-1]) != frame[-1]:
                self.corrupt_frames += 1
                del buf[:1]
                continue
            del buf[:total]
            yield Packet(servo_id, frame[4], frame[5:-1])

    def clear(self) -> None:
        self._buffer.clear()
