"""One emulated STS3215: control table memory with EEPROM/Lock semantics and lazily stepped physics.

Frames (all in encoder steps, 4096 per turn):

- *encoder*: the magnetic encoder reading of the output shaft, 0..4095 (``encoder_raw``).
- *present*: what Present_Position reports, ``encoder - Homing_Offset`` (wrapped into 0..4095 when
  ``wrap_present`` is on, the default). Goals, limits and LeRobot calibration ranges live in this frame.

Physics: the servo's internal set-point (``_ref``) ramps toward the goal (clamped to the position limits)
with a trapezoidal profile (Acceleration × 100 step/s², Goal_Velocity step/s, 0 = maximum). The shaft
follows the set-point unless an obstacle stops it; the tracking error then becomes load
(P_Coefficient-scaled), load becomes current, current² heats the motor. Overload/over-current protection
trips after Protection_Time / Over_Current_Protection_Time and, per Unloading_Condition, releases torque.
The state is advanced from elapsed (emulator) time whenever it is looked at; no thread ticks it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

from so100_driver.protocol import (
    CONTROL_TABLE,
    EEPROM_ADDRESSES,
    MEMORY_SIZE,
    READ_ONLY_ADDRESSES,
    RESOLUTION,
    ErrorBit,
    encode_register,
    register,
)

_REG_TORQUE = CONTROL_TABLE["Torque_Enable"].address
_REG_GOAL = CONTROL_TABLE["Goal_Position"].address
_OVERLOAD = int(ErrorBit.OVERLOAD)  # plain ints: IntFlag arithmetic is slow in the physics loop
_OVERHEAT = int(ErrorBit.OVERHEAT)
_OVERCURRENT = int(ErrorBit.OVERCURRENT)
_VOLTAGE = int(ErrorBit.VOLTAGE)
_COMPUTED = {
    "Present_Position": "use set_physical_position() or set_encoder_position()",
    "Present_Velocity": "it follows the motion",
    "Present_Load": "block the joint with emu.block() to load it",
    "Present_Voltage": "use set_voltage()",
    "Present_Temperature": "use set_temperature()",
    "Present_Current": "block the joint with emu.block() to draw current (signed, like the load)",
    "Status": "use emu.faults.set_error_bits()",
    "Moving": "it follows the motion",
}
_LAYOUT = {reg.name: (reg.address, reg.size, reg.sign_bit) for reg in CONTROL_TABLE.values()}


@dataclass(frozen=True)
class GoalWrite:
    """One Goal_Position write that reached a servo, for auditing what a driver really commanded."""

    time: float  # emulator clock
    servo_id: int
    goal: int  # Present_Position frame, as written (before the servo clamps it to its limits)
    present: float  # where the shaft really was at that instant (Present_Position frame)
    torque_enabled: bool


@dataclass
class PhysicsParams:
    """Tunable physical constants of the emulated servo (defaults: STS3215 7.4 V, roughly)."""

    max_speed: float = 3000.0  # step/s, no-load speed cap
    max_acceleration: float = 100_000.0  # step/s², used when Acceleration = 0 ("no ramp")
    load_per_step: float = 10.0  # 0.1 % of full load per step of tracking error at P_Coefficient = 32
    friction_load: float = 40.0  # 0.1 %, load while moving freely
    stall_current: float = 400.0  # Present_Current units (6.5 mA) at 100 % load
    idle_current: float = 6.0
    ambient_temperature: float = 25.0  # °C
    full_load_temperature_rise: float = 90.0  # °C above ambient at steady 100 % current
    thermal_time_constant: float = 120.0  # s
    supply_voltage: float = 7.4  # V
    voltage_sag_at_full_load: float = 0.3  # V
    wrap_present: bool = True  # Present_Position wraps into 0..4095 after the homing offset
    eeprom_write_requires_torque_off: bool = False


class ServoModel:
    """State of one emulated servo. Public methods are thread-safe (they take the emulator's lock)."""

    def __init__(
        self,
        servo_id: int,
        lock: threading.RLock,
        clock: Callable[[], float],
        params: PhysicsParams | None = None,
        encoder_position: float = 2048.0,
        eeprom: dict[str, int] | None = None,
    ) -> None:
        self._lock = lock
        self._clock = clock
        self.params = params or PhysicsParams()
        self.mem = bytearray(MEMORY_SIZE)
        for reg in CONTROL_TABLE.values():
            self.mem[reg.address : reg.address + reg.size] = encode_register(reg, reg.default)
        self._poke("ID", servo_id)
        for name, value in (eeprom or {}).items():
            self._poke(name, value)
        self.eeprom_image = bytearray(self.mem)  # what survives a power cycle
        self._pos = float(encoder_position)  # continuous shaft position, encoder frame
        self._ref = 0.0  # set-point, present frame
        self._ref_vel = 0.0
        self._velocity = 0.0
        self._load = 0.0
        self.temperature = self.params.ambient_temperature
        self.voltage = self.params.supply_voltage
        self._obstacle: tuple[float, int] | None = None  # (encoder-frame position, side)
        self._overload_time = 0.0
        self._overcurrent_time = 0.0
        self._latched = 0
        self.injected_error = 0
        self.lockout_on_overload = False  # fault: an overload trip leaves the servo mute until power-cycled
        self.locked_out = False
        self._registered: dict[int, int] = {}  # REG_WRITE buffer: address -> byte
        self.goal_writes: list[GoalWrite] = []  # every Goal_Position write over the bus
        self._last = clock()
        self._power_up()

    # ------------------------------------------------------------------ register access
    def _peek(self, name: str) -> int:
        address, size, sign_bit = _LAYOUT[name]
        word = self.mem[address] if size == 1 else self.mem[address] | (self.mem[address + 1] << 8)
        if sign_bit is not None and word & (1 << sign_bit):
            return -(word & ((1 << sign_bit) - 1))
        return word

    def _poke(self, name: str, value: int) -> None:
        reg = register(name)
        self.mem[reg.address : reg.address + reg.size] = encode_register(reg, value)

    def get(self, name: str) -> int:
        """Current value of a register (signed where the register has a sign bit)."""
        register(name)  # clear error for unknown names
        with self._lock:
            self._advance()
            self._refresh_present()
            return self._peek(name)

    def set(self, name: str, value: int, persist: bool = True) -> None:
        """Test backdoor: set a register without the bus, ignoring Lock and read-only flags (e.g. a
        different Model_Number or firmware). EEPROM registers are saved too unless ``persist`` is False.
        Writing Torque_Enable has its usual effects. Computed registers (Present_*, Status, Moving) are
        refused: move the joint with :meth:`set_physical_position`, inject errors with ``emu.faults``."""
        reg = register(name)
        if reg.name in _COMPUTED:
            raise ValueError(f"{name} is computed by the emulator; {_COMPUTED[reg.name]}")
        with self._lock:
            self._advance()
            torque_before = self.mem[_REG_TORQUE]
            self._poke(name, value)
            if persist and reg.eeprom:
                self.eeprom_image[reg.address : reg.address + reg.size] = self.mem[
                    reg.address : reg.address + reg.size
                ]
            if reg.address == _REG_TORQUE:
                self._on_torque_write(self.mem[_REG_TORQUE], torque_before)

    @property
    def servo_id(self) -> int:
        return self.mem[5]

    # ------------------------------------------------------------------ frames
    def _offset(self) -> int:
        return self._peek("Homing_Offset")

    def _encoder(self) -> float:
        return self._pos % RESOLUTION

    def _present_float(self) -> float:
        value = self._encoder() - self._offset()
        return value % RESOLUTION if self.params.wrap_present else value

    def _present_raw(self) -> int:
        value = round(self._encoder()) % RESOLUTION - self._offset()
        return value % RESOLUTION if self.params.wrap_present else value

    def _target(self) -> float:
        goal = self._peek("Goal_Position")
        low, high = self._peek("Min_Position_Limit"), self._peek("Max_Position_Limit")
        if low == 0 and high == 0:  # multi-turn mode: no clamping
            return float(goal)
        return float(min(max(goal, low), high))

    @property
    def encoder_raw(self) -> int:
        """Physical encoder reading 0..4095 (no homing offset)."""
        with self._lock:
            self._advance()
            return round(self._encoder()) % RESOLUTION

    @property
    def angle_raw(self) -> float:
        """Ground-truth shaft position in the Present_Position frame (continuous, not quantised)."""
        with self._lock:
            self._advance()
            return self._present_float()

    @property
    def present_position(self) -> int:
        """The value a READ of Present_Position returns right now."""
        with self._lock:
            self._advance()
            return self._present_raw()

    @property
    def torque_enabled(self) -> bool:
        with self._lock:
            self._advance()
            return self.mem[_REG_TORQUE] == 1

    @property
    def load(self) -> float:
        """Signed load in 0.1 % of full scale."""
        with self._lock:
            self._advance()
            return self._load

    def set_physical_position(self, raw: float) -> None:
        """Move the shaft by hand to ``raw`` in the Present_Position frame (instant; meant for torque off)."""
        with self._lock:
            self._advance()
            self._pos += raw - self._present_float()
            self._sync_ref_if_limp()

    def set_encoder_position(self, raw: float) -> None:
        """Move the shaft by hand so that the encoder (no offset) reads ``raw``."""
        with self._lock:
            self._advance()
            self._pos += (raw - self._encoder() + RESOLUTION / 2) % RESOLUTION - RESOLUTION / 2
            self._sync_ref_if_limp()

    def set_temperature(self, celsius: float) -> None:
        with self._lock:
            self._advance()
            self.temperature = float(celsius)

    def set_voltage(self, volts: float) -> None:
        with self._lock:
            self._advance()
            self.voltage = float(volts)

    def block(self, at_raw: float) -> None:
        """Put a rigid obstacle at ``at_raw`` (Present_Position frame) on the current side of the shaft."""
        with self._lock:
            self._advance()
            here = self._present_float()
            at_encoder = self._pos + (at_raw - here)
            side = 1 if at_raw >= here else -1
            self._obstacle = (at_encoder, side)

    def unblock(self) -> None:
        with self._lock:
            self._advance()
            self._obstacle = None

    def power_cycle(self) -> None:
        """Cut and restore power: RAM back to defaults, EEPROM from the saved image, errors cleared."""
        with self._lock:
            self._advance()
            self.mem[:] = self.eeprom_image
            for reg in CONTROL_TABLE.values():
                if not reg.eeprom and reg.writable:
                    self._poke(reg.name, reg.default)
            self._power_up()

    def _power_up(self) -> None:
        self.locked_out = False
        self._poke("Torque_Limit", self._peek("Max_Torque_Limit"))
        self._latched = 0
        self._overload_time = self._overcurrent_time = 0.0
        self._registered.clear()
        present = self._present_raw()
        self._poke("Goal_Position", present if abs(present) < 32768 else 0)
        self._ref = self._present_float()
        self._ref_vel = self._velocity = self._load = 0.0
        self._refresh_present()

    def _sync_ref_if_limp(self) -> None:
        if self.mem[_REG_TORQUE] != 1:
            self._ref = self._present_float()
            self._ref_vel = 0.0

    def release_torque(self) -> None:
        """The servo drops its torque by itself, with no bus write (firmware protection, a supply dip):
        Torque_Enable reads 0 from now on and the joint goes limp."""
        with self._lock:
            self._advance()
            self.mem[_REG_TORQUE] = 0
            self._sync_ref_if_limp()
            self._velocity = self._load = 0.0

    def update(self) -> None:
        """Bring the physics up to the emulator clock."""
        with self._lock:
            self._advance()

    # ------------------------------------------------------------------ protocol side
    def error_byte(self) -> int:
        """Error byte of a status packet (same bits as the Status register), injected bits included."""
        return self._live_errors() | (self.injected_error & 0x7F)

    def _live_errors(self) -> int:
        bits = self._latched
        volts10 = self._voltage_reading()
        if not self._peek("Min_Voltage_Limit") <= volts10 <= self._peek("Max_Voltage_Limit"):
            bits |= _VOLTAGE
        return int(bits)

    def read_memory(self, address: int, length: int) -> bytes | None:
        """Bytes for a READ; None when the range runs past the table."""
        if address + length > MEMORY_SIZE:
            return None
        self._advance()
        self._refresh_present()
        return bytes(self.mem[address : address + length])

    def write_memory(self, address: int, data: bytes) -> None:
        """Apply a WRITE: read-only bytes ignored, EEPROM saved only while Lock = 0, side effects."""
        self._advance()
        torque_before = self.mem[_REG_TORQUE]
        torque_on = torque_before == 1
        for i, byte in enumerate(data):
            addr = address + i
            if addr >= MEMORY_SIZE or addr in READ_ONLY_ADDRESSES:
                continue
            if addr in EEPROM_ADDRESSES and torque_on and self.params.eeprom_write_requires_torque_off:
                continue
            self.mem[addr] = byte
        lock = self._peek("Lock")
        for i in range(len(data)):
            addr = address + i
            if addr in EEPROM_ADDRESSES and addr not in READ_ONLY_ADDRESSES and lock == 0:
                self.eeprom_image[addr] = self.mem[addr]
        if address <= _REG_TORQUE < address + len(data):
            self._on_torque_write(self.mem[_REG_TORQUE], torque_before)
        if address <= _REG_GOAL < address + len(data):
            torque = self.mem[_REG_TORQUE] == 1
            record = GoalWrite(
                self._clock(), self.servo_id, self._peek("Goal_Position"), self._present_float(), torque
            )
            self.goal_writes.append(record)
            del self.goal_writes[:-100_000]

    def reg_write(self, address: int, data: bytes) -> None:
        for i, byte in enumerate(data):
            self._registered[address + i] = byte

    def action(self) -> None:
        pending, self._registered = self._registered, {}
        # apply contiguous runs so side effects see whole registers
        for address in sorted(pending):
            self.write_memory(address, bytes([pending[address]]))

    def factory_reset(self) -> None:
        """RESET: everything back to factory defaults except the ID."""
        servo_id = self.servo_id
        for reg in CONTROL_TABLE.values():
            self._poke(reg.name, reg.default)
        self._poke("ID", servo_id)
        self.eeprom_image[:] = self.mem
        self._power_up()

    def _on_torque_write(self, value: int, before: int) -> None:
        self._latched = 0
        self._overload_time = self._overcurrent_time = 0.0
        if value == 128:  # "set middle": current position becomes 2048
            offset = round(self._encoder()) % RESOLUTION - 2048
            self._poke("Homing_Offset", offset)
            if self._peek("Lock") == 0:
                reg = register("Homing_Offset")
                self.eeprom_image[reg.address : reg.address + reg.size] = self.mem[
                    reg.address : reg.address + reg.size
                ]
            self.mem[_REG_TORQUE] = before
            self._sync_ref_if_limp()
            return
        if value == 1 and before != 1:
            self._ref = self._present_float()
            self._ref_vel = 0.0
        if value != 1:
            self._sync_ref_if_limp()

    # ------------------------------------------------------------------ physics
    def _voltage_reading(self) -> int:
        sag = self.params.voltage_sag_at_full_load * min(abs(self._load), 1000.0) / 1000.0
        return max(0, min(255, round((self.voltage - sag) * 10)))

    def _current(self) -> float:
        return self.params.idle_current + self.params.stall_current * min(abs(self._load), 1000.0) / 1000.0

    def _advance(self) -> None:
        """Integrate the physics up to the emulator clock (2 ms steps while moving, coarser at rest)."""
        now = self._clock()
        elapsed = now - self._last
        self._last = now
        if elapsed <= 1e-9:
            return
        c = _StepConstants.of(self)
        while elapsed > 1e-9:
            torque_on = self.mem[_REG_TORQUE] == 1
            settled = not torque_on or (
                self._ref_vel == 0.0 and self._ref == c.target and self._velocity == 0.0
            )
            if not settled:
                dt = min(elapsed, 0.002)
            elif abs(self._load) > 1.0:
                dt = min(elapsed, 0.02)  # constant stall: only protection timers and heat evolve
            else:
                dt = min(elapsed, 1.0)
            self._step(dt, c, torque_on)
            elapsed -= dt

    def _step(self, dt: float, c: _StepConstants, torque_on: bool) -> None:
        p = self.params
        if torque_on:
            self._ramp_setpoint(dt, c)
            before = self._pos
            present = self._present_from(self._pos, c.offset)
            step = p.max_speed * dt
            self._pos += max(-step, min(step, self._ref - present))
            if self._obstacle is not None:
                at, side = self._obstacle
                self._pos = min(self._pos, at) if side > 0 else max(self._pos, at)
            self._velocity = (self._pos - before) / dt
            error = self._ref - self._present_from(self._pos, c.offset)
            limit = c.torque_limit
            if self._latched & _OVERLOAD:
                limit = min(limit, c.protective_torque)
            load = c.gain * error
            if abs(self._velocity) > 1:
                load += math.copysign(p.friction_load, self._velocity)
            self._load = max(-limit, min(limit, load))
        else:
            self._velocity = 0.0
            self._load = 0.0
        current = self._current()
        self._update_protection(dt, c, current)
        steady = p.ambient_temperature + p.full_load_temperature_rise * (current / p.stall_current) ** 2
        self.temperature += (steady - self.temperature) * (1.0 - math.exp(-dt / p.thermal_time_constant))

    def _present_from(self, pos: float, offset: int) -> float:
        value = pos % RESOLUTION - offset
        return value % RESOLUTION if self.params.wrap_present else value

    def _ramp_setpoint(self, dt: float, c: _StepConstants) -> None:
        target = c.target
        error = target - self._ref
        if abs(error) < 1e-6 and abs(self._ref_vel) < c.accel * dt:
            self._ref, self._ref_vel = target, 0.0
            return
        v_stop = math.sqrt(2.0 * c.accel * abs(error))
        v_desired = math.copysign(min(c.vmax, v_stop), error)
        dv = max(-c.accel * dt, min(c.accel * dt, v_desired - self._ref_vel))
        self._ref_vel += dv
        new_ref = self._ref + self._ref_vel * dt
        if (target - new_ref) * error <= 0:  # reached or overshot
            self._ref, self._ref_vel = target, 0.0
        else:
            self._ref = new_ref

    def _update_protection(self, dt: float, c: _StepConstants, current: float) -> None:
        if self.temperature > c.max_temperature:
            self._latched |= _OVERHEAT  # stays reported until torque is written again
        if abs(self._load) > c.overload_threshold:
            self._overload_time += dt
            if self._overload_time >= c.overload_time:
                self._latched |= _OVERLOAD
                self.locked_out = self.locked_out or self.lockout_on_overload
        else:
            self._overload_time = 0.0
        if current > c.protection_current:
            self._overcurrent_time += dt
            if self._overcurrent_time >= c.overcurrent_time:
                self._latched |= _OVERCURRENT
        else:
            self._overcurrent_time = 0.0
        bits = self._live_errors() if c.unloading & _VOLTAGE else self._latched
        if self.mem[_REG_TORQUE] == 1 and bits & c.unloading:
            self.mem[_REG_TORQUE] = 0  # protection releases torque
            self._sync_ref_if_limp()
            self._velocity = self._load = 0.0

    def _refresh_present(self) -> None:
        present = self._present_raw()
        self._poke("Present_Position", max(-32767, min(32767, present)))
        self._poke("Present_Velocity", max(-32767, min(32767, round(self._velocity))))
        self._poke("Present_Load", max(-1023, min(1023, round(self._load))))
        self._poke("Present_Voltage", self._voltage_reading())
        self._poke("Present_Temperature", max(0, min(255, round(self.temperature))))
        self._poke("Status", self.error_byte())
        moving = abs(self._velocity) > 1 or (
            self.mem[_REG_TORQUE] == 1 and abs(self._target() - self._present_float()) > self._dead_zone()
        )
        self._poke("Moving", int(moving and self._obstacle_free()))
        current = round(self._current()) if self.mem[_REG_TORQUE] == 1 else 0
        # sign-magnitude like the load: the current flows the way the motor pushes
        self._poke("Present_Current", min(32767, current) * (-1 if self._load < 0 else 1))

    def _dead_zone(self) -> int:
        return max(self._peek("CW_Dead_Zone"), self._peek("CCW_Dead_Zone"), 1)

    def _obstacle_free(self) -> bool:
        if self._obstacle is None:
            return True
        at, _ = self._obstacle
        return abs(self._pos - at) > 0.5 or abs(self._velocity) > 1


@dataclass(frozen=True)
class _StepConstants:
    """Register-derived constants, decoded once per integration instead of once per step."""

    target: float
    offset: int
    accel: float
    vmax: float
    gain: float
    torque_limit: float
    protective_torque: float
    overload_threshold: float
    overload_time: float
    protection_current: float
    overcurrent_time: float
    max_temperature: float
    unloading: int

    @classmethod
    def of(cls, servo: ServoModel) -> _StepConstants:
        peek, params = servo._peek, servo.params
        accel_units = servo.mem[CONTROL_TABLE["Acceleration"].address]
        speed_units = abs(peek("Goal_Velocity"))
        return cls(
            target=servo._target(),
            offset=peek("Homing_Offset"),
            accel=accel_units * 100.0 if accel_units else params.max_acceleration,
            vmax=min(float(speed_units), params.max_speed) if speed_units else params.max_speed,
            gain=params.load_per_step * peek("P_Coefficient") / 32.0,
            torque_limit=float(peek("Torque_Limit")),
            protective_torque=10.0 * peek("Protective_Torque"),
            overload_threshold=10.0 * peek("Overload_Torque"),
            overload_time=0.01 * peek("Protection_Time"),
            protection_current=float(peek("Protection_Current")),
            overcurrent_time=0.01 * peek("Over_Current_Protection_Time"),
            max_temperature=float(peek("Max_Temperature_Limit")),
            unloading=peek("Unloading_Condition"),
        )
