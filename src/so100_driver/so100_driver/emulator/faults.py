"""Injectable bus faults of the emulator, each reproducing a failure users meet on real SO arms."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

from so100_driver.emulator.usb_adapter import FTDI_PACKET_BYTES
from so100_driver.protocol import Instruction, Packet


@dataclass(frozen=True)
class Delivery:
    """How the USB adapter hands one batch of replies to the host."""

    delay_s: float = 0.0
    stall_s: float = 0.0  # hold this and every later byte for this long (from now)
    packet_bytes: int = 0  # > 0: deliver in packets of this many bytes ...
    gap_s: float = 0.0  # ... this far apart


@dataclass
class _StallTrigger:
    seconds: float
    address: int | None
    count: int
    skip: int = 0


def _read_address(packet: Packet) -> int | None:
    if packet.code in (Instruction.READ, Instruction.SYNC_READ) and packet.params:
        return packet.params[0]
    return None


@dataclass
class _FaultState:
    silent: set[int] = field(default_factory=set)
    corrupt_next: int = 0
    corrupt_probability: float = 0.0
    truncate_next: int = 0
    reorder: bool = False
    duplicate: bool = False
    delay_s: float = 0.0
    delay_next: int = 0
    drop_next: int = 0
    stalls: list[_StallTrigger] = field(default_factory=list)
    split_bytes: int = 0
    split_gap_s: float = 0.0


class Faults:
    """Fault switches, all thread-safe and effective from the next packet on.

    - :meth:`silence` a servo: it stops answering (a browned-out or latched servo, a loose cable).
    - :meth:`corrupt_next` / :meth:`corrupt_probability`: replies with a wrong checksum (COMM_RX_CORRUPT).
    - :meth:`truncate_next`: replies cut in half (COMM_RX_CORRUPT after the SDK's deadline).
    - :meth:`drop_next`: the next N replies are not sent at all (COMM_RX_TIMEOUT).
    - :meth:`reorder_replies`: a sync read is answered in reverse ID order.
    - :meth:`duplicate_replies`: every reply is sent twice.
    - :meth:`delay_replies`: replies arrive late (after the SDK gave up) and poison the next read.
    - :meth:`stall_replies`: the USB adapter holds every byte for a while, then releases the backlog in
      62-byte packets (a busy hub or latency timer); requests keep reaching the servos meanwhile.
    - :meth:`split_replies`: replies reach the host in small USB packets with gaps between them.
    - :meth:`set_error_bits`: a servo reports error bits (overload, overheat, voltage, angle, ...).
    - :meth:`lockout_on_overload`: an overload trip mutes the servo until the power is cycled.
    - :meth:`clear`: everything back to normal (error bits included).
    """

    def __init__(self, lock: threading.RLock, servos_by_id, seed: int | None = None) -> None:
        self._lock = lock
        self._servos_by_id = servos_by_id
        self._state = _FaultState()
        self._rng = random.Random(seed)

    def silence(self, servo_id: int, silent: bool = True) -> None:
        with self._lock:
            (self._state.silent.add if silent else self._state.silent.discard)(servo_id)

    def unsilence(self, servo_id: int) -> None:
        self.silence(servo_id, False)

    def corrupt_next(self, count: int = 1) -> None:
        with self._lock:
            self._state.corrupt_next = int(count)

    def corrupt_probability(self, probability: float, seed: int | None = None) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"corrupt probability must be in [0, 1], got {probability}")
        with self._lock:
            self._state.corrupt_probability = float(probability)
            if seed is not None:
                self._rng.seed(seed)

    def truncate_next(self, count: int = 1) -> None:
        with self._lock:
            self._state.truncate_next = int(count)

    def drop_next(self, count: int = 1) -> None:
        with self._lock:
            self._state.drop_next = int(count)

    def reorder_replies(self, enabled: bool = True) -> None:
        with self._lock:
            self._state.reorder = bool(enabled)

    def duplicate_replies(self, enabled: bool = True) -> None:
        with self._lock:
            self._state.duplicate = bool(enabled)

    def delay_replies(self, seconds: float, count: int | None = None) -> None:
        """Delay replies by ``seconds`` (the next ``count`` reply batches, or all of them when None)."""
        with self._lock:
            self._state.delay_s = float(seconds)
            self._state.delay_next = -1 if count is None else int(count)

    def stall_replies(
        self, seconds: float, address: int | None = None, count: int = 1, skip: int = 0
    ) -> None:
        """Stall the adapter for ``seconds`` when the next request reading ``address`` (any request
        when None) is answered, ``count`` times, after letting ``skip`` such requests through. Replies
        stay in order; the backlog leaves in 62-byte packets once the stall ends."""
        if seconds <= 0 or count < 1 or skip < 0:
            raise ValueError(
                f"stall needs seconds > 0, count >= 1 and skip >= 0, got {seconds}, {count}, {skip}"
            )
        with self._lock:
            self._state.stalls.append(_StallTrigger(float(seconds), address, int(count), int(skip)))

    def split_replies(self, packet_bytes: int | None = FTDI_PACKET_BYTES, gap_s: float = 0.002) -> None:
        """Deliver every reply batch in USB packets of ``packet_bytes``, ``gap_s`` apart (None: whole)."""
        with self._lock:
            self._state.split_bytes = int(packet_bytes or 0)
            self._state.split_gap_s = float(gap_s) if packet_bytes else 0.0

    def set_error_bits(self, servo_id: int, bits: int) -> None:
        """Make ``servo_id`` report ``bits`` (ErrorBit flags) in every status packet and in Status (65)."""
        with self._lock:
            self._servos_by_id(servo_id).injected_error = int(bits) & 0x7F

    def lockout_on_overload(self, servo_id: int, enabled: bool = True) -> None:
        """After an overload trip the servo stops answering entirely until :meth:`BusEmulator.power_cycle`
        (reported on SO-101 grippers: "the ID stops answering until the power is cycled")."""
        with self._lock:
            self._servos_by_id(servo_id).lockout_on_overload = bool(enabled)

    def clear_error_bits(self, servo_id: int) -> None:
        self.set_error_bits(servo_id, 0)

    def clear(self) -> None:
        with self._lock:
            self._state = _FaultState()
            for servo_id in range(254):
                servo = self._servos_by_id(servo_id, missing_ok=True)
                if servo is not None:
                    servo.injected_error = 0
                    servo.lockout_on_overload = False

    # ------------------------------------------------------------------ used by the emulator
    def is_silent(self, servo_id: int) -> bool:
        return servo_id in self._state.silent

    def order(self, replies: list[bytes]) -> list[bytes]:
        return list(reversed(replies)) if self._state.reorder else replies

    def mangle(self, packet: bytes) -> bytes:
        """Apply per-packet faults to one outgoing reply (called with the lock held)."""
        s = self._state
        if s.drop_next > 0:
            s.drop_next -= 1
            return b""
        if s.truncate_next > 0:
            s.truncate_next -= 1
            packet = packet[: max(1, len(packet) // 2)]
        elif s.corrupt_next > 0 or (s.corrupt_probability and self._rng.random() < s.corrupt_probability):
            s.corrupt_next = max(0, s.corrupt_next - 1)
            packet = packet[:-1] + bytes([packet[-1] ^ 0x5A])
        return packet * 2 if s.duplicate else packet

    def delivery_for(self, request: Packet) -> Delivery:
        """How the replies to ``request`` reach the host (called with the lock held)."""
        s = self._state
        delay = 0.0
        if s.delay_next != 0 and s.delay_s > 0:
            if s.delay_next > 0:
                s.delay_next -= 1
            delay = s.delay_s
        stall = 0.0
        address = _read_address(request)
        for trigger in list(s.stalls):
            if trigger.address is not None and trigger.address != address:
                continue
            if trigger.skip > 0:
                trigger.skip -= 1
            else:
                stall = max(stall, trigger.seconds)
                trigger.count -= 1
                if trigger.count <= 0:
                    s.stalls.remove(trigger)
        return Delivery(delay, stall, s.split_bytes, s.split_gap_s)
