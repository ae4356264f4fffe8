"""Feetech STS bus layer on ``scservo_sdk`` 1.0.0 that never hands out stale data.

The SDK is used for what it does well (opening the port, framing and checksumming packets) and worked around
where it is fragile (see the hardware reference, section 3.5):

* **Replies are matched to the request they answer.** A status packet carries only the servo id and its
  length, not the address it answers. So a reply is accepted only from a servo that was asked, with exactly
  the requested length, and only while the line is *in step*: every reply to every earlier request has
  arrived. After anything that leaves replies unaccounted for (a timeout, a garbled or unexpected packet,
  bytes waiting before a request), the line is *out of step* and the next transaction first sends a
  marker: a READ whose reply length no other request uses (3..10 bytes, rotating). A serial line and its
  USB adapter deliver in order, so once the marker's reply is in, nothing older can follow; everything
  before it is discarded as late. Until a marker comes back, no data is handed out.
* Sync-read replies are collected by servo id, in any order; duplicates and strays are counted and dropped,
  so one silent servo no longer costs the readings of the others.
* The status error byte of every reply (sync reads included) is kept and decoded.
* A reading exists only for a servo that answered in this call: a failed servo is reported as missing,
  never as 0 or as last cycle's value.
* Every transaction runs under one lock and resets the SDK's ``is_using`` flag afterwards.
* Retries re-ask only the servos that did not answer, within a bounded time budget.
* The port is opened exclusively (``flock`` and ``TIOCEXCL``): a second program on the same port is
  refused with :class:`BusPortBusyError` before it sends a byte, and the first one never notices.
* A vanished device (USB unplugged) raises :class:`BusDisconnectedError`; :meth:`FeetechBus.reopen`
  reconnects at the same path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import termios
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import scservo_sdk as scs
import serial

from so100_driver import protocol

CURRENT_MA_PER_UNIT = 6.5  # Present_Current / Protection_Current unit
DEFAULT_BAUDRATE = 1_000_000


class BusError(ConnectionError):
    """A bus transaction failed after its retries."""


class BusDisconnectedError(BusError):
    """The serial device is gone (unplugged) or not open."""


class BusPortBusyError(BusError):
    """Another program holds the serial port; nothing was sent."""


#: Reply lengths of the markers that bring the line back in step; no other request reads 3..10 bytes.
MARKER_LENGTHS = tuple(range(3, 11))
_BUSY_ERRNOS = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY)


@dataclass(frozen=True)
class Reply:
    """One servo's status packet: its data bytes and its status error byte."""

    data: bytes
    error: int


@dataclass
class ReadResult:
    """Outcome of one (possibly retried) read of a register block from several servos."""

    replies: dict[int, Reply]
    missing: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return not self.missing

    def value(self, servo_id: int, reg: protocol.Register, start: int) -> int:
        """Decode register ``reg`` from the reply of ``servo_id`` to a block read that began at ``start``."""
        offset = reg.address - start
        return protocol.decode_register(reg, self.replies[servo_id].data[offset : offset + reg.size])


@dataclass
class RegisterRead:
    """Values of one register from several servos, their status bytes, and who did not answer."""

    values: dict[int, int]
    errors: dict[int, int]
    missing: tuple[int, ...]


@dataclass
class BusStats:
    """Counters for diagnostics; all monotonically increasing."""

    transactions: int = 0
    failed_transactions: int = 0
    retries: int = 0
    timeouts: int = 0
    corrupt: int = 0
    duplicates: int = 0
    strays: int = 0
    late: int = 0  # replies to earlier requests, discarded while bringing the line back in step
    resyncs: int = 0  # markers sent
    flushes: int = 0
    disconnects: int = 0
    reconnects: int = 0

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Telemetry:
    """Decoded slow-rate registers of one servo (raw units, signs applied)."""

    torque_enabled: bool  # Torque_Enable read back: a servo may drop its torque by itself
    goal: int  # Goal_Position the servo is driving to
    position: int
    velocity: int
    load: int  # 0.1 % of max torque, signed
    voltage: float  # V
    temperature: int  # deg C
    status: int  # error bits (same layout as the status byte)
    moving: bool
    current: int  # raw units of 6.5 mA, signed (bit 15 is the sign)
    reply_error: int = 0  # status byte of the reply itself

    @property
    def error_bits(self) -> int:
        return self.status | self.reply_error

    @property
    def current_ma(self) -> float:
        """Signed current in mA; its magnitude is what heats the motor."""
        return self.current * CURRENT_MA_PER_UNIT

    @property
    def load_percent(self) -> float:
        return self.load / 10.0


@dataclass
class _Pending:
    ids: list[int]
    replies: dict[int, Reply] = field(default_factory=dict)


class WaitingPortHandler(scs.PortHandler):
    """``PortHandler`` whose reads sleep until bytes arrive instead of returning empty at once.

    The SDK's parser calls ``readPort`` in a loop until a packet is complete or its deadline passes: on an
    empty port it spins, taking a core (and the GIL) from the rest of the process, the emulator's thread
    included. Here a read with nothing waiting first sleeps in select() until bytes arrive or the packet
    deadline passes; what it returns is unchanged.
    """

    def readPort(self, length: int) -> bytes:  # noqa: N802 - SDK method name
        if length > 0 and self.packet_timeout > 0 and not self.ser.in_waiting:
            left_ms = self.packet_timeout - self.getTimeSinceStart()
            if left_ms > 0:
                select.select([self.ser.fd], [], [], left_ms / 1000.0)
        return self.ser.read(length)


class ExclusivePortHandler(WaitingPortHandler):
    """``PortHandler`` that locks the port for this process before touching it.

    ``flock`` (pyserial's ``exclusive``) stops every program that asks for the lock (this package's
    nodes and tools); ``TIOCEXCL`` also stops any later ``open`` by a program that does not ask (root
    excepted). Both happen before the port is configured, so a refused program changes nothing.
    """

    def setupPort(self, cflag_baud: int) -> bool:  # noqa: N802 - SDK method name
        if self.is_open:
            self.closePort()
        self.ser = serial.Serial(
            port=self.port_name, baudrate=self.baudrate, bytesize=serial.EIGHTBITS, timeout=0, exclusive=True
        )
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.ser.fd, termios.TIOCEXCL)
        self.is_open = True
        self.ser.reset_input_buffer()
        self.tx_time_per_byte = (1000.0 / self.baudrate) * 10.0
        return True

    def closePort(self) -> None:  # noqa: N802 - SDK method name
        if self.ser is not None and self.ser.fd is not None:
            with contextlib.suppress(OSError):  # else the flag outlives us on a tty someone else holds
                fcntl.ioctl(self.ser.fd, termios.TIOCNXCL)
        super().closePort()


def port_holders(path: str) -> list[str]:
    """Processes that have ``path``'s device open, as ``"pid N (command line)"`` (best effort, Linux)."""
    try:
        device = os.stat(path).st_rdev
    except OSError:
        return []
    holders = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(_same_device(f"/proc/{pid}/fd/{fd}", device) for fd in fds):
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    command = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
                holders.append(f"pid {pid} ({command[:120]})")
    return holders


def _same_device(fd_path: str, device: int) -> bool:
    with contextlib.suppress(OSError):
        st = os.stat(fd_path)
        return st.st_rdev == device and (st.st_mode & 0o170000) == 0o020000  # a character device
    return False


class FeetechBus:
    """Thread-safe access to one STS servo bus (protocol end 0, little-endian).

    ``timeout_ms`` bounds the wait for one request's replies (the SDK default is 34 ms; hardware behind a
    slow USB adapter may need 50). ``retries`` re-asks servos that did not answer, but never beyond
    ``retry_budget_ms`` after the first request.
    """

    def __init__(
        self,
        port: str,
        baudrate: int = DEFAULT_BAUDRATE,
        timeout_ms: float = 30.0,
        retries: int = 2,
        retry_budget_ms: float = 40.0,
    ) -> None:
        self.port_name = port
        self.baudrate = baudrate
        self.timeout_ms = float(timeout_ms)
        self.retries = int(retries)
        self.retry_budget_ms = float(retry_budget_ms)
        self.stats = BusStats()
        self._lock = threading.RLock()
        self._port: scs.PortHandler | None = None
        self._was_lost = False
        self._packets = scs.PacketHandler(0)
        self._in_step = False  # unknown after opening: the first transaction sends a marker
        self._markers_sent = 0
        self._failed_markers = 0
        self._last_replier: int | None = None

    # ----------------------------------------------------------------------------------------- connection
    @property
    def is_open(self) -> bool:
        return self._port is not None and self._port.is_open

    @property
    def in_step(self) -> bool:
        """True when every reply to every request sent so far is accounted for."""
        return self._in_step

    def open(self) -> None:
        """Open the port exclusively; raises :class:`BusDisconnectedError` when the device is not there,
        :class:`BusPortBusyError` when another program holds it."""
        with self._lock:
            port = ExclusivePortHandler(self.port_name)
            port.baudrate = self.baudrate
            try:
                opened = port.openPort()
            except OSError as exc:  # serial.SerialException is an OSError
                if exc.errno in _BUSY_ERRNOS:
                    raise BusPortBusyError(self._busy_message()) from exc
                raise BusDisconnectedError(f"cannot open servo bus port {self.port_name!r}: {exc}") from exc
            if not opened:
                raise BusDisconnectedError(
                    f"cannot open servo bus port {self.port_name!r} at {self.baudrate} baud "
                    "(the SDK supports 4800..1000000 baud in fixed steps)"
                )
            self._port = port
            self._in_step = False
            if self._was_lost:
                self._was_lost = False
                self.stats.reconnects += 1

    def _busy_message(self) -> str:
        others = [h for h in port_holders(self.port_name) if not h.startswith(f"pid {os.getpid()} ")]
        return (
            f"servo bus port {self.port_name!r} is in use by another program"
            + (f" ({'; '.join(others)})" if others else "")
            + ": only one program may drive the arm; stop the other one (an arm node, so100-calibrate, "
            "a LeRobot script) first"
        )

    def close(self) -> None:
        with self._lock:
            port, self._port = self._port, None
            if port is not None and port.ser is not None:
                with contextlib.suppress(OSError):
                    port.closePort()

    def reopen(self) -> None:
        """Close and open again at the same path (after a USB drop); raises :class:`BusDisconnectedError`."""
        with self._lock:
            self.close()
            self.open()

    def __enter__(self) -> FeetechBus:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------------------------------- transactions
    def _begin(self) -> scs.PortHandler:
        port = self._port
        if port is None or not port.is_open:
            raise BusDisconnectedError(f"servo bus port {self.port_name!r} is not open")
        port.is_using = False
        try:
            if port.ser.in_waiting:  # bytes nobody asked for: more may be on their way
                port.ser.reset_input_buffer()
                self.stats.flushes += 1
                self._in_step = False
        except OSError as exc:
            raise self._lost(exc) from exc
        return port

    def _lost(self, exc: BaseException) -> BusDisconnectedError:
        self.stats.disconnects += 1
        self._was_lost = True
        self._in_step = False
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(OSError):
                port.closePort()
        return BusDisconnectedError(f"servo bus device {self.port_name!r} disconnected: {exc}")

    def _resync(self, port: scs.PortHandler, ids: list[int]) -> bool:
        """Bring the line back in step: send a marker READ and discard every packet before its reply.

        The marker goes to the servo that answered last (or, after a failed marker, the next one of
        ``ids``); its reply length is one no other request uses and rotates, so neither an older reply
        nor an older marker can pass for it. True once the marker's reply is in.
        """
        candidates = list(dict.fromkeys([i for i in (self._last_replier, *ids) if i is not None]))
        target = candidates[self._failed_markers % len(candidates)]
        length = MARKER_LENGTHS[self._markers_sent % len(MARKER_LENGTHS)]
        self._markers_sent += 1
        self.stats.resyncs += 1
        self.stats.transactions += 1
        if self._packets.readTx(port, target, 0, length) != scs.COMM_SUCCESS:
            port.is_using = False
            return False
        deadline = time.monotonic() + self.timeout_ms / 1000.0
        while True:
            packet, comm = self._receive(port, deadline)
            if comm == scs.COMM_RX_TIMEOUT:
                self.stats.timeouts += 1
            elif comm != scs.COMM_SUCCESS:
                self.stats.corrupt += 1
            if comm == scs.COMM_RX_TIMEOUT or (comm != scs.COMM_SUCCESS and port.packet_timeout == 0):
                self._failed_markers += 1  # no reply before the deadline: try another servo next time
                return False
            if comm != scs.COMM_SUCCESS:
                continue
            if packet[2] == target and _data_length(packet) == length:
                self._in_step = True
                self._failed_markers = 0
                return True
            self.stats.late += 1

    def _request_and_collect(
        self, port: scs.PortHandler, ids: list[int], address: int, size: int
    ) -> _Pending:
        """Send one READ (one id) or SYNC_READ (several) and collect the replies until all came or timeout.

        Only replies of exactly ``size`` bytes from the servos asked are taken. Anything else, or a reply
        that does not come, leaves the line out of step.
        """
        pending = _Pending(ids=list(ids))
        if len(ids) == 1:
            comm = self._packets.readTx(port, ids[0], address, size)
        else:
            comm = self._packets.syncReadTx(port, address, size, list(ids), len(ids))
        self.stats.transactions += 1
        if comm != scs.COMM_SUCCESS:
            port.is_using = False
            self._in_step = False
            return pending
        deadline = time.monotonic() + self.timeout_ms / 1000.0
        wanted = set(ids)
        garbled = 0  # replies lost to corruption: no need to wait for them until the deadline
        while len(pending.replies) + garbled < len(wanted):
            packet, comm = self._receive(port, deadline)
            if comm == scs.COMM_RX_TIMEOUT:
                self.stats.timeouts += 1
                break
            if comm != scs.COMM_SUCCESS:
                self.stats.corrupt += 1
                garbled += 1
                self._in_step = False
                if port.packet_timeout == 0:  # the deadline fired while the packet was incomplete
                    break
                continue
            servo_id = packet[2]
            if servo_id in pending.replies:
                self.stats.duplicates += 1
                self._in_step = False
            elif servo_id in wanted and _data_length(packet) == size:
                pending.replies[servo_id] = Reply(bytes(packet[5 : 5 + size]), packet[4])
                self._last_replier = servo_id
            else:
                self.stats.strays += 1
                self._in_step = False
        port.is_using = False
        if len(pending.replies) < len(wanted):
            self._in_step = False
        return pending

    def _receive(self, port: scs.PortHandler, deadline: float) -> tuple[list[int], int]:
        """One status packet via the SDK's parser, sleeping in select() until bytes arrive.

        The SDK polls a non-blocking port in a busy loop; waiting here first leaves the CPU to others
        (the emulator, the rest of the robot) and bounds the wait by ``deadline``.
        """
        remaining = deadline - time.monotonic()
        if not port.ser.in_waiting:
            if remaining <= 0 or not select.select([port.ser.fd], [], [], remaining)[0]:
                return [], scs.COMM_RX_TIMEOUT
            remaining = deadline - time.monotonic()
        port.setPacketTimeoutMillis(max(remaining * 1000.0, 0.5))  # for the rest of a partial packet
        return self._packets.rxPacket(port)

    def _attempts(self, port: scs.PortHandler, ids: list[int], retries: int) -> Iterable[int]:
        """Attempt numbers of a transaction with retries, each starting in step (a marker first when not),
        within ``retry_budget_ms``. An attempt whose marker fails is skipped but counted."""
        start = time.monotonic()
        for attempt in range(retries + 1):
            if attempt:
                self.stats.retries += 1
                if (time.monotonic() - start) * 1000.0 > self.retry_budget_ms:
                    return
            if self._in_step or self._resync(port, ids):
                yield attempt

    def read(self, ids: Iterable[int], address: int, size: int, retries: int | None = None) -> ReadResult:
        """Read ``size`` bytes at ``address`` from every id; servos that never answered are in ``missing``."""
        ids = list(ids)
        retries = self.retries if retries is None else retries
        replies: dict[int, Reply] = {}
        todo = ids
        with self._lock:
            port = self._begin()
            try:
                for _ in self._attempts(port, ids, retries):
                    replies.update(self._request_and_collect(port, todo, address, size).replies)
                    todo = [i for i in ids if i not in replies]
                    if not todo:
                        break
            except OSError as exc:
                raise self._lost(exc) from exc
            finally:
                port.is_using = False
        if todo:
            self.stats.failed_transactions += 1
        return ReadResult(replies=replies, missing=tuple(todo))

    def sync_write(self, address: int, size: int, values: Mapping[int, int]) -> None:
        """Broadcast one SYNC_WRITE of unsigned register values (no reply, so no retry and no marker)."""
        param: list[int] = []
        for servo_id, value in values.items():
            param.append(servo_id)
            param.extend(int(value).to_bytes(size, "little"))
        with self._lock:
            port = self._begin()
            try:
                comm = self._packets.syncWriteTxOnly(port, address, size, param, len(param))
            except OSError as exc:
                raise self._lost(exc) from exc
            finally:
                port.is_using = False
            self.stats.transactions += 1
            if comm != scs.COMM_SUCCESS:
                self.stats.failed_transactions += 1
                raise BusError(f"sync write at address {address} failed: {self._packets.getTxRxResult(comm)}")

    def write(self, servo_id: int, address: int, size: int, value: int, retries: int | None = None) -> int:
        """Write an unsigned register value and wait for its acknowledgement; returns the status byte."""
        data = list(int(value).to_bytes(size, "little"))
        retries = self.retries if retries is None else retries
        comm = scs.COMM_TX_FAIL
        with self._lock:
            port = self._begin()
            try:
                for _ in self._attempts(port, [servo_id], retries):
                    self.stats.transactions += 1
                    comm, error = self._write_once(port, servo_id, address, data)
                    if comm == scs.COMM_SUCCESS:
                        return error
                    if comm == scs.COMM_RX_TIMEOUT:
                        self.stats.timeouts += 1
                    elif comm == scs.COMM_RX_CORRUPT:
                        self.stats.corrupt += 1
            except OSError as exc:
                raise self._lost(exc) from exc
            finally:
                port.is_using = False
        self.stats.failed_transactions += 1
        raise BusError(
            f"servo {servo_id}: write of address {address} failed after {retries + 1} attempts: "
            f"{self._packets.getTxRxResult(comm)}"
        )

    def _write_once(
        self, port: scs.PortHandler, servo_id: int, address: int, data: list[int]
    ) -> tuple[int, int]:
        """One WRITE; its acknowledgement is an empty status packet from ``servo_id``."""
        comm = self._packets.writeTxOnly(port, servo_id, address, len(data), data)
        if comm != scs.COMM_SUCCESS:
            self._in_step = False
            return comm, 0
        port.is_using = True
        deadline = time.monotonic() + self.timeout_ms / 1000.0
        while True:
            packet, comm = self._receive(port, deadline)
            if comm != scs.COMM_SUCCESS:
                self._in_step = False
                return comm, 0
            if packet[2] == servo_id and _data_length(packet) == 0:
                self._last_replier = servo_id
                return comm, packet[4]
            self.stats.strays += 1
            self._in_step = False

    # ------------------------------------------------------------------------------------ named registers
    def read_register(self, ids: Iterable[int], name: str, retries: int | None = None) -> RegisterRead:
        """Read one named register from several servos (sync read), sign decoded."""
        reg = protocol.register(name)
        result = self.read(ids, reg.address, reg.size, retries)
        return RegisterRead(
            values={i: result.value(i, reg, reg.address) for i in result.replies},
            errors={i: r.error for i, r in result.replies.items()},
            missing=result.missing,
        )

    def write_register(self, servo_id: int, name: str, value: int, retries: int | None = None) -> int:
        """Write one named register (sign encoded) with acknowledgement; returns the status byte."""
        reg = protocol.register(name)
        return self.write(servo_id, reg.address, reg.size, protocol.to_unsigned(reg, value), retries)

    def sync_write_register(self, name: str, values: Mapping[int, int]) -> None:
        """Broadcast one named register to several servos (sign encoded)."""
        reg = protocol.register(name)
        self.sync_write(reg.address, reg.size, {i: protocol.to_unsigned(reg, v) for i, v in values.items()})

    def read_telemetry(self, servo_id: int, retries: int | None = None) -> Telemetry | None:
        """Read the block Torque_Enable..Present_Current of one servo; None when it did not answer."""
        start = protocol.TELEMETRY_START
        result = self.read([servo_id], start, protocol.TELEMETRY_LENGTH, retries)
        if result.missing:
            return None
        table = protocol.CONTROL_TABLE

        def get(name: str) -> int:
            return result.value(servo_id, table[name], start)

        return Telemetry(
            torque_enabled=get("Torque_Enable") == 1,
            goal=get("Goal_Position"),
            position=get("Present_Position"),
            velocity=get("Present_Velocity"),
            load=get("Present_Load"),
            voltage=get("Present_Voltage") / 10.0,
            temperature=get("Present_Temperature"),
            status=get("Status"),
            moving=bool(get("Moving")),
            current=get("Present_Current"),
            reply_error=result.replies[servo_id].error,
        )

    def ping(self, servo_id: int) -> int | None:
        """Model number of ``servo_id`` or None when it does not answer."""
        result = self.read([servo_id], protocol.CONTROL_TABLE["Model_Number"].address, 2)
        if result.missing:
            return None
        return int.from_bytes(result.replies[servo_id].data, "little")


def _data_length(packet: list[int]) -> int:
    """Number of data bytes of a status packet (its LEN field counts the error byte and the checksum)."""
    return packet[3] - 2
