"""A bus of emulated STS3215 servos behind a pseudo-terminal, for the unmodified ``scservo_sdk``."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import select
import shutil
import tempfile
import threading
import time
import tty
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from so100_driver.emulator.faults import Faults
from so100_driver.emulator.presets import MotorPreset, eeprom_for, preset_motors
from so100_driver.emulator.servo import PhysicsParams, ServoModel
from so100_driver.emulator.usb_adapter import UsbAdapter
from so100_driver.protocol import (
    BROADCAST_ID,
    Instruction,
    Packet,
    PacketParser,
    instruction_packet,
    status_packet,
)

_LOG = logging.getLogger(__name__)
_BYTE_TIME_S = 10e-6  # 1 Mbaud, 8N1
_FENCE = 0x7E  # private instruction used by wait_idle(); never sent by the SDK


class BusEmulator:
    """STS3215 servos on a pty; point ``scservo_sdk.PortHandler`` at :attr:`port`.

    Args:
        ids: servo IDs on the bus (ignored when ``preset`` or ``calibration`` names the motors).
        link_path: stable symlink to the pty slave (kept across :meth:`disconnect` / :meth:`reconnect`);
            None makes one in a private temporary directory.
        preset: ``"so101_follower"``, ``"so101_leader"`` (or ``so100_*``): realistic LeRobot-calibrated
            EEPROM and a rest pose; None: factory servos (offset 0, limits 0..4095, at 2048).
        calibration: a LeRobot calibration file path or :class:`smolvla_common.calibration.ArmCalibration`;
            its homing offsets and ranges are written to EEPROM (joints start mid-range unless a preset
            supplies a rest pose).
        positions: initial Present_Position per ID (overrides the preset's rest pose).
        params: physical constants (:class:`PhysicsParams`), shared by all servos.
        broadcast_ping: ``"all"`` (every servo answers, in ID order) or ``"single"`` (only when exactly one
            servo is on the bus).
        simulate_timing: deliver replies after the wire time (10 µs/byte) plus Return_Delay_Time.
        start: start the pty and the responder thread now (else call :meth:`start`).
    """

    def __init__(
        self,
        ids: Iterable[int] = (1, 2, 3, 4, 5, 6),
        link_path: str | os.PathLike | None = None,
        *,
        preset: str | None = None,
        calibration=None,
        positions: Mapping[int, float] | None = None,
        params: PhysicsParams | None = None,
        broadcast_ping: str = "all",
        simulate_timing: bool = False,
        seed: int | None = None,
        start: bool = True,
    ) -> None:
        if broadcast_ping not in ("all", "single"):
            raise ValueError(f"broadcast_ping must be 'all' or 'single', got {broadcast_ping!r}")
        self._lock = threading.RLock()
        self._time_offset = 0.0
        self.params = params or PhysicsParams()
        self.broadcast_ping = broadcast_ping
        self.simulate_timing = simulate_timing
        self._servos: list[ServoModel] = []
        self._build_servos(tuple(ids), preset, calibration, dict(positions or {}))
        self.faults = Faults(self._lock, self._find_servo, seed=seed)
        self.stats: Counter[str] = Counter()
        self._parser = PacketParser()
        self._own_dir: str | None = None
        if link_path is None:
            self._own_dir = tempfile.mkdtemp(prefix="sts_bus_")
            link_path = os.path.join(self._own_dir, "ttySTS")
        self._link = Path(link_path)
        if self._link.exists() and not self._link.is_symlink():
            raise ValueError(f"link_path {self._link} exists and is not a symlink; refusing to replace it")
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name: str | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._commands: queue.Queue[tuple[str, threading.Event]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._fences: dict[int, threading.Event] = {}
        self._fence_counter = 0
        self._adapter: UsbAdapter | None = None
        if start:
            self.start()

    # ------------------------------------------------------------------ construction
    def _clock(self) -> float:
        return time.monotonic() + self._time_offset

    def _build_servos(self, ids, preset, calibration, positions) -> None:
        motors: list[MotorPreset] = []
        if preset is not None:
            motors = list(preset_motors(preset))
        if calibration is not None:
            from smolvla_common.calibration import ArmCalibration, load_calibration

            cal = calibration if isinstance(calibration, ArmCalibration) else load_calibration(calibration)
            rest = {m.name: m.rest for m in motors}
            motors = []
            for name, m in cal.motors.items():
                pose = rest.get(name)
                if pose is None or not m.range_min <= pose <= m.range_max:
                    pose = (m.range_min + m.range_max) // 2
                motors.append(MotorPreset(name, m.id, m.homing_offset, m.range_min, m.range_max, pose))
        if motors:
            for m in motors:
                eeprom = eeprom_for(m.name, m.homing_offset, m.range_min, m.range_max)
                encoder = (positions.get(m.motor_id, m.rest) + m.homing_offset) % 4096
                self._servos.append(self._new_servo(m.motor_id, encoder, eeprom))
        else:
            for servo_id in ids:
                self._servos.append(self._new_servo(servo_id, positions.get(servo_id, 2048), {}))

    def _new_servo(self, servo_id: int, encoder: float, eeprom: dict[str, int]) -> ServoModel:
        if not 0 <= servo_id <= 253:
            raise ValueError(f"servo id {servo_id} out of range 0..253")
        return ServoModel(servo_id, self._lock, self._clock, self.params, encoder, eeprom)

    def _find_servo(self, servo_id: int, missing_ok: bool = False) -> ServoModel | None:
        for servo in self._servos:
            if servo.servo_id == servo_id:
                return servo
        if missing_ok:
            return None
        ids = sorted(s.servo_id for s in self._servos)
        raise KeyError(f"no emulated servo with id {servo_id}; the bus has ids {ids}")

    # ------------------------------------------------------------------ public API
    @property
    def port(self) -> str:
        """Device path for ``PortHandler`` (the stable symlink)."""
        return str(self._link)

    @property
    def pty_name(self) -> str | None:
        """The current pty slave (changes on every :meth:`reconnect`)."""
        return self._slave_name

    @property
    def connected(self) -> bool:
        return self._master is not None

    @property
    def ids(self) -> list[int]:
        return [s.servo_id for s in self._servos]

    def servo(self, servo_id: int) -> ServoModel:
        """The emulated servo with this ID (raises KeyError naming the IDs present)."""
        with self._lock:
            return self._find_servo(servo_id)

    def goal_writes(self) -> list:
        """Every Goal_Position write that reached a servo (:class:`GoalWrite`), in time order."""
        with self._lock:
            writes = [w for servo in self._servos for w in servo.goal_writes]
        return sorted(writes, key=lambda w: w.time)

    def block(self, servo_id: int, at_raw: float) -> None:
        """Put an obstacle in the way of ``servo_id`` at ``at_raw`` (Present_Position frame)."""
        self.servo(servo_id).block(at_raw)

    def unblock(self, servo_id: int) -> None:
        self.servo(servo_id).unblock()

    def power_cycle(self, ids: Iterable[int] | None = None) -> None:
        """Cut and restore servo power: RAM to defaults (torque off), EEPROM from what was saved."""
        with self._lock:
            for servo in self._servos:
                if ids is None or servo.servo_id in set(ids):
                    servo.power_cycle()

    def advance(self, seconds: float) -> None:
        """Fast-forward the physics by ``seconds`` of emulator time (heat, protection timers, motion)."""
        if seconds < 0:
            raise ValueError("cannot advance time backwards")
        with self._lock:
            self._time_offset += seconds
            for servo in self._servos:
                servo.update()

    def wait_idle(self, timeout: float = 1.0) -> bool:
        """Barrier: return once every byte the client wrote so far has been processed (e.g. after a
        reply-less sync write or broadcast, before inspecting servos or calling :meth:`advance`).

        A private fence packet is queued behind the client's bytes on the pty and the call waits until the
        responder thread reaches it. Returns False on timeout; True at once when disconnected.
        """
        slave = self._slave
        if slave is None or self._thread is None:
            return True
        with self._lock:
            self._fence_counter += 1
            token = self._fence_counter
            done = self._fences[token] = threading.Event()
        try:
            os.write(slave, instruction_packet(BROADCAST_ID, _FENCE, token.to_bytes(4, "little")))
            return done.wait(timeout)
        except OSError:  # disconnected meanwhile: nothing left to process
            return True
        finally:
            with self._lock:
                self._fences.pop(token, None)

    def start(self) -> None:
        if self._thread is not None:
            return
        if self._wake_r < 0:
            raise RuntimeError("this emulator was stopped; create a new BusEmulator")
        self._open_pty()
        self._adapter = UsbAdapter(self._send)
        self._thread = threading.Thread(target=self._run, name="sts-bus-emulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the responder thread, close the pty and remove the symlink (idempotent)."""
        if self._thread is not None:
            self._command("stop")
            self._thread.join(timeout=5)
            self._thread = None
        if self._adapter is not None:
            self._adapter.close()
            self._adapter = None
        self._close_pty()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    def disconnect(self) -> None:
        """The USB adapter vanishes: pty closed (the client gets I/O errors), symlink removed."""
        self._command("disconnect")

    def reconnect(self) -> None:
        """The adapter comes back: a new pty behind the same symlink path. Servo state is unchanged."""
        self._command("reconnect")

    def __enter__(self) -> BusEmulator:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ pty handling
    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline, even before the client configures it
        os.set_blocking(master, False)
        self._master, self._slave = master, slave  # keep the slave open: else reads on master get EIO
        self._slave_name = os.ttyname(slave)
        self._link.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._link.with_name(f".{self._link.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(self._slave_name, tmp)
        os.replace(tmp, self._link)
        self._parser.clear()

    def _close_pty(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self._link.is_symlink() and os.readlink(self._link) == self._slave_name:
                self._link.unlink()
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._slave_name = None

    def _command(self, name: str) -> None:
        if self._thread is None:
            raise RuntimeError("the emulator is not running; call start() first")
        done = threading.Event()
        self._commands.put((name, done))
        os.write(self._wake_w, b"x")
        if not done.wait(timeout=5):
            raise RuntimeError(f"emulator thread did not process {name!r}")

    def _run(self) -> None:
        while True:
            fds = [self._wake_r] + ([self._master] if self._master is not None else [])
            readable, _, _ = select.select(fds, [], [], 0.5)
            if self._wake_r in readable:
                os.read(self._wake_r, 512)
                while not self._commands.empty():
                    name, done = self._commands.get()
                    if name == "stop":
                        done.set()
                        return
                    if name == "disconnect":
                        self._adapter.discard()
                        self._close_pty()
                    elif name == "reconnect" and self._master is None:
                        self._open_pty()
                    done.set()
            if self._master is not None and self._master in readable:
                try:
                    data = os.read(self._master, 4096)
                except OSError as exc:
                    if exc.errno in (errno.EIO, errno.EAGAIN):
                        time.sleep(0.001)
                        continue
                    raise
                try:
                    self._serve(data)
                except Exception:  # a bug must not kill the bus: log it, count it, keep serving
                    _LOG.exception("emulator failed to serve a request")
                    self.stats["emulator_errors"] += 1

    def _serve(self, data: bytes) -> None:
        for packet in self._parser.feed(data):
            if packet.servo_id == BROADCAST_ID and packet.code == _FENCE:
                self._release_fence(packet)
                continue
            with self._lock:
                self.stats["requests"] += 1
                self.stats[f"inst_0x{packet.code:02x}"] += 1
                replies = self._handle(packet)
                if not replies:
                    continue
                delivery = self.faults.delivery_for(packet)
                out = b"".join(self.faults.mangle(r) for r in replies)
                self.stats["replies"] += len(replies)
                wire_delay = self._wire_delay(packet, replies) if self.simulate_timing else 0.0
            self.stats["corrupt_requests"] = self._parser.corrupt_frames
            if delivery.stall_s > 0:
                self._adapter.stall(delivery.stall_s)
            self._adapter.send(out, delivery.delay_s + wire_delay, delivery.packet_bytes, delivery.gap_s)

    def _release_fence(self, packet: Packet) -> None:
        with self._lock:
            fence = self._fences.get(int.from_bytes(packet.params, "little"))
        if fence is not None:
            fence.set()

    def _wire_delay(self, packet: Packet, replies: list[bytes]) -> float:
        request_bytes = len(packet.params) + 6
        reply_bytes = sum(len(r) for r in replies)
        return_delay = sum(2e-6 * s.mem[7] for s in self._servos if s.servo_id in {r[2] for r in replies})
        return (request_bytes + reply_bytes) * _BYTE_TIME_S + return_delay

    def _send(self, data: bytes) -> None:
        if not data or self._master is None:
            return
        try:
            os.write(self._master, data)
        except OSError as exc:  # client gone or buffer full: bytes on a dead wire are simply lost
            if exc.errno not in (errno.EIO, errno.EAGAIN):
                raise

    # ------------------------------------------------------------------ protocol
    def _mute(self, servo: ServoModel) -> bool:
        if self.faults.is_silent(servo.servo_id):
            return True
        servo.update()  # a lock-out may have happened since the last packet
        return servo.locked_out

    def _handle(self, packet: Packet) -> list[bytes]:
        inst, params = packet.code, packet.params
        if packet.servo_id == BROADCAST_ID:
            return self._handle_broadcast(inst, params)
        replies = []
        for servo in self._servos:
            if servo.servo_id != packet.servo_id or self._mute(servo):
                continue
            reply = self._handle_unicast(servo, packet.servo_id, inst, params)
            if reply is not None:
                replies.append(reply)
        return replies

    def _handle_unicast(self, servo: ServoModel, servo_id: int, inst: int, params: bytes) -> bytes | None:
        if inst == Instruction.PING:
            return status_packet(servo_id, servo.error_byte())
        if inst == Instruction.READ:
            if len(params) != 2:
                return None
            data = servo.read_memory(params[0], params[1])
            return None if data is None else status_packet(servo_id, servo.error_byte(), data)
        if inst in (Instruction.RESET, Instruction.RESET_NEW):
            servo.factory_reset()
        elif not self._apply_write(servo, inst, params):
            return None  # unknown instruction: a servo stays silent
        if servo.mem[8] == 0:  # Response_Status_Level 0: only READ and PING answer
            return None
        return status_packet(servo_id, servo.error_byte())

    def _handle_broadcast(self, inst: int, params: bytes) -> list[bytes]:
        live = [s for s in self._servos if not self._mute(s)]
        if inst == Instruction.SYNC_READ and len(params) >= 2:
            address, length = params[0], params[1]
            replies = []
            for servo_id in params[2:]:
                servo = self._find_servo(servo_id, missing_ok=True)
                if servo is None or self._mute(servo):
                    continue
                data = servo.read_memory(address, length)
                if data is not None:
                    replies.append(status_packet(servo_id, servo.error_byte(), data))
            return self.faults.order(replies)
        if inst == Instruction.SYNC_WRITE and len(params) >= 2:
            address, length = params[0], params[1]
            step = length + 1
            body = params[2:]
            for i in range(0, len(body) - step + 1, step):
                servo = self._find_servo(body[i], missing_ok=True)
                if servo is not None and not self._mute(servo):
                    servo.write_memory(address, body[i + 1 : i + step])
            return []
        if inst == Instruction.PING:
            if self.broadcast_ping == "single" and len(self._servos) != 1:
                return []
            return [status_packet(s.servo_id, s.error_byte()) for s in sorted(live, key=lambda s: s.servo_id)]
        for servo in live:
            self._apply_write(servo, inst, params)
        return []

    @staticmethod
    def _apply_write(servo: ServoModel, inst: int, params: bytes) -> bool:
        """WRITE, REG_WRITE or ACTION (unicast or broadcast); False for any other instruction."""
        if inst == Instruction.WRITE and params:
            servo.write_memory(params[0], params[1:])
        elif inst == Instruction.REG_WRITE and params:
            servo.reg_write(params[0], params[1:])
        elif inst == Instruction.ACTION:
            servo.action()
        else:
            return False
        return True
