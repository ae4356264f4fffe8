"""Feetech STS3215 bus emulator behind a pseudo-terminal, for the unmodified ``scservo_sdk``.

Quick start::

    from scservo_sdk import PortHandler, PacketHandler
    from so100_driver.emulator import BusEmulator

    with BusEmulator(preset="so101_follower") as emu:      # or ids=(1, 2, 3), calibration="follower.json"
        port = PortHandler(emu.port); port.openPort()       # emu.port: stable symlink to the pty slave
        ph = PacketHandler(0)
        ph.ping(port, 1)                                    # -> (777, COMM_SUCCESS, 0)

Ground truth and the simulated world:

- ``emu.servo(id)``: :class:`ServoModel` with ``angle_raw`` (exact shaft position in the Present_Position
  frame, float), ``present_position`` (what a READ returns), ``encoder_raw`` (encoder, no offset),
  ``torque_enabled``, ``load``, ``temperature``, ``voltage``, ``get(name)`` / ``set(name, value)``
  (register backdoor), ``set_physical_position(raw)`` (move the joint by hand, Present_Position frame),
  ``set_encoder_position(raw)``, ``set_temperature(c)``, ``set_voltage(v)``, ``power_cycle()``.
- ``emu.block(id, at_raw)`` / ``emu.unblock(id)``: a rigid obstacle; the servo stalls, load and current
  rise, the motor heats, overload protection trips after Protection_Time and releases torque.
- ``emu.advance(seconds)``: fast-forward physics (heating, protection timers) without waiting.
- ``emu.wait_idle()``: wait until every byte sent so far was processed (after a reply-less sync write).
- ``emu.power_cycle(ids=None)``: RAM back to defaults, EEPROM from what was saved while Lock = 0.
- ``emu.disconnect()`` / ``emu.reconnect()``: the USB adapter vanishes (pty closed, symlink removed;
  the client gets I/O errors) and comes back as a new pty behind the same ``emu.port``.
- ``emu.faults``: :class:`Faults` -- ``silence(id)``, ``unsilence(id)``, ``corrupt_next(n)``,
  ``corrupt_probability(p, seed)``, ``truncate_next(n)``, ``drop_next(n)``, ``reorder_replies(on)``,
  ``duplicate_replies(on)``, ``delay_replies(seconds, count)``, ``set_error_bits(id, bits)``,
  ``clear_error_bits(id)``, ``lockout_on_overload(id)``, ``clear()``.
- ``emu.stats``: counters (requests, replies, per instruction, corrupt requests).

CLI: ``python -m so100_driver.emulator --link /tmp/so101 [--preset so101_follower] [--calibration F]``.
"""

from so100_driver.emulator.bus_emulator import BusEmulator
from so100_driver.emulator.faults import Faults
from so100_driver.emulator.presets import PRESETS, MotorPreset
from so100_driver.emulator.servo import PhysicsParams, ServoModel

__all__ = [
    "PRESETS",
    "BusEmulator",
    "Faults",
    "MotorPreset",
    "PhysicsParams",
    "ServoModel",
]
