"""The STS3215 bus emulator, driven by the real scservo_sdk over a real pseudo-terminal.

The SDK's packet code is unmodified; only the reply deadline is longer (TolerantPortHandler) so a loaded
test machine does not turn correct exchanges into timeouts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import scservo_sdk as scs

from so100_driver.emulator import BusEmulator
from so100_driver.emulator.sdk_client import TolerantPortHandler
from so100_driver.protocol import (
    CONTROL_TABLE,
    ErrorBit,
    decode_sign_magnitude,
    encode_sign_magnitude,
)

ADDR = {name: reg.address for name, reg in CONTROL_TABLE.items()}

DEADLINE_MS = 150.0  # reply deadline: generous, the test machine may be loaded


@pytest.fixture
def emu():
    emulator = BusEmulator(ids=(1, 2, 3))
    yield emulator
    emulator.stop()


@pytest.fixture
def bus(emu):
    port = TolerantPortHandler(emu.port, DEADLINE_MS)
    assert port.openPort()
    handler = scs.PacketHandler(0)
    # The emulator's thread may still be starting on a loaded machine: wait for its first full answer, then
    # drop any late reply to an earlier probe so that no test reads it as the answer to its own request.
    assert wait_until(lambda: answers(port, handler, emu.ids[0]), timeout=10.0)
    time.sleep(DEADLINE_MS / 1000)
    port.clearPort()
    yield port, handler
    port.closePort()


def answers(port, handler, servo_id) -> bool:
    """One read of the model number answered in full. Not ``ping``: when a probe times out and its reply
    arrives late, the next probe's request pairs with it and the SDK's ping indexes an empty read (CI saw
    ``IndexError`` there); a read then reports success with no data, which this refuses."""
    data, comm, _ = handler.readTxRx(port, servo_id, 3, 2)
    return comm == scs.COMM_SUCCESS and len(data) == 2


def wait_until(predicate, timeout=2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def sync_read(port, ph, ids, address, length):
    group = scs.GroupSyncRead(port, ph, address, length)
    for i in ids:
        group.addParam(i)
    comm = group.txRxPacket()
    return comm, {i: group.getData(i, address, length) for i in ids}


def test_ping_returns_model_number_and_missing_id_times_out(bus):
    port, ph = bus
    assert ph.ping(port, 1) == (777, scs.COMM_SUCCESS, 0)
    model, comm, _ = ph.ping(port, 9)
    assert comm == scs.COMM_RX_TIMEOUT and model == 0


def test_read_write_and_sync_read_write(emu, bus):
    port, ph = bus
    assert ph.read1ByteTxRx(port, 2, ADDR["ID"]) == (2, scs.COMM_SUCCESS, 0)
    assert ph.read1ByteTxRx(port, 1, ADDR["Firmware_Major_Version"])[0] == 3
    comm, values = sync_read(port, ph, [1, 2, 3], ADDR["Present_Position"], 2)
    assert comm == scs.COMM_SUCCESS and values == {1: 2048, 2: 2048, 3: 2048}

    writer = scs.GroupSyncWrite(port, ph, ADDR["Goal_Position"], 2)
    for servo_id, goal in ((1, 1000), (2, 2100), (3, 3000)):
        writer.addParam(servo_id, [scs.SCS_LOBYTE(goal), scs.SCS_HIBYTE(goal)])
    assert writer.txPacket() == scs.COMM_SUCCESS
    assert wait_until(lambda: emu.servo(3).get("Goal_Position") == 3000)
    assert [emu.servo(i).get("Goal_Position") for i in (1, 2, 3)] == [1000, 2100, 3000]
    # torque is off: goals are stored but nothing moves
    assert [emu.servo(i).present_position for i in (1, 2, 3)] == [2048, 2048, 2048]


def test_writes_to_read_only_registers_are_ignored(emu, bus):
    port, ph = bus
    assert ph.write2ByteTxRx(port, 1, ADDR["Model_Number"], 1234) == (scs.COMM_SUCCESS, 0)
    assert ph.write2ByteTxRx(port, 1, ADDR["Present_Position"], 10) == (scs.COMM_SUCCESS, 0)
    assert ph.read2ByteTxRx(port, 1, ADDR["Model_Number"])[0] == 777
    assert emu.servo(1).present_position == 2048


def test_eeprom_persists_only_while_unlocked(emu, bus):
    port, ph = bus
    # Lock = 1 (power-up default): the value takes effect but is lost at the next power cycle
    ph.write2ByteTxRx(port, 1, ADDR["Max_Position_Limit"], 3000)
    assert ph.read2ByteTxRx(port, 1, ADDR["Max_Position_Limit"])[0] == 3000
    emu.power_cycle()
    assert ph.read2ByteTxRx(port, 1, ADDR["Max_Position_Limit"])[0] == 4095
    # Lock = 0: saved
    ph.write1ByteTxRx(port, 1, ADDR["Lock"], 0)
    ph.write2ByteTxRx(port, 1, ADDR["Max_Position_Limit"], 3000)
    ph.write1ByteTxRx(port, 1, ADDR["Lock"], 1)
    ph.write1ByteTxRx(port, 1, ADDR["Torque_Enable"], 1)
    emu.power_cycle()
    assert ph.read2ByteTxRx(port, 1, ADDR["Max_Position_Limit"])[0] == 3000
    assert ph.read1ByteTxRx(port, 1, ADDR["Torque_Enable"])[0] == 0  # RAM back to defaults
    assert ph.read1ByteTxRx(port, 1, ADDR["Lock"])[0] == 1


def test_homing_offset_shifts_present_position_and_torque_128_recentres(emu, bus):
    port, ph = bus
    servo = emu.servo(1)
    servo.set_encoder_position(1500)
    ph.write1ByteTxRx(port, 1, ADDR["Lock"], 0)
    offset = encode_sign_magnitude(-300, 11)  # Present = Actual - Offset
    ph.write2ByteTxRx(port, 1, ADDR["Homing_Offset"], offset)
    assert ph.read2ByteTxRx(port, 1, ADDR["Present_Position"])[0] == 1800
    assert decode_sign_magnitude(ph.read2ByteTxRx(port, 1, ADDR["Homing_Offset"])[0], 11) == -300
    ph.write1ByteTxRx(port, 1, ADDR["Torque_Enable"], 128)
    assert ph.read2ByteTxRx(port, 1, ADDR["Present_Position"])[0] == 2048
    assert servo.get("Homing_Offset") == 1500 - 2048
    assert servo.encoder_raw == 1500


def test_goal_is_clamped_to_limits_and_motion_is_acceleration_limited(emu, bus):
    port, ph = bus
    servo = emu.servo(1)
    ph.write2ByteTxRx(port, 1, ADDR["Max_Position_Limit"], 2600)
    ph.write1ByteTxRx(port, 1, ADDR["Acceleration"], 20)  # 2000 step/s²
    ph.write1ByteTxRx(port, 1, ADDR["Torque_Enable"], 1)
    start = time.monotonic()
    ph.write2ByteTxRx(port, 1, ADDR["Goal_Position"], 4000)
    time.sleep(0.1)
    moved = servo.angle_raw - 2048
    elapsed = time.monotonic() - start
    assert 0 < moved <= 0.5 * 2000 * elapsed**2 + 1  # still on the acceleration ramp
    assert ph.read1ByteTxRx(port, 1, ADDR["Moving"])[0] == 1
    velocity = decode_sign_magnitude(ph.read2ByteTxRx(port, 1, ADDR["Present_Velocity"])[0], 15)
    assert 0 < velocity <= 2000 * (time.monotonic() - start) + 1
    emu.advance(3.0)
    assert ph.read2ByteTxRx(port, 1, ADDR["Present_Position"])[0] == 2600  # clamped at Max_Position_Limit
    assert ph.read1ByteTxRx(port, 1, ADDR["Moving"])[0] == 0


def test_torque_off_means_limp_and_movable_by_hand(emu, bus):
    port, ph = bus
    servo = emu.servo(2)
    ph.write2ByteTxRx(port, 2, ADDR["Goal_Position"], 3000)
    emu.advance(1.0)
    assert servo.present_position == 2048
    servo.set_physical_position(1234.4)
    assert ph.read2ByteTxRx(port, 2, ADDR["Present_Position"])[0] == 1234
    # torque on with the stale goal: the servo chases it (the driver must write goal = present first)
    ph.write1ByteTxRx(port, 2, ADDR["Torque_Enable"], 1)
    emu.advance(2.0)
    assert servo.present_position == 3000
    # the arm holds against a push while torque is on
    servo.set_physical_position(2900)
    emu.advance(0.5)
    assert servo.present_position == 3000


def test_stall_against_obstacle_raises_load_and_heat_then_overload_releases_torque(emu, bus):
    port, ph = bus
    servo = emu.servo(1)
    ph.write1ByteTxRx(port, 1, ADDR["Torque_Enable"], 1)
    emu.block(1, 2300)
    ph.write2ByteTxRx(port, 1, ADDR["Goal_Position"], 3000)
    emu.advance(0.5)
    assert servo.present_position == 2300
    load = decode_sign_magnitude(ph.read2ByteTxRx(port, 1, ADDR["Present_Load"])[0], 10)
    assert load >= 800  # pushing hard against the obstacle
    current = ph.read2ByteTxRx(port, 1, ADDR["Present_Current"])[0]
    assert current > 300
    _, _, error = ph.read1ByteTxRx(port, 1, ADDR["Status"])
    assert error == 0  # not yet: Protection_Time is 2 s
    temperature_before = servo.temperature
    emu.advance(2.0)
    value, comm, error = ph.read1ByteTxRx(port, 1, ADDR["Status"])
    assert comm == scs.COMM_SUCCESS
    assert error & ErrorBit.OVERLOAD and value & ErrorBit.OVERLOAD
    assert ph.read1ByteTxRx(port, 1, ADDR["Torque_Enable"])[0] == 0  # Unloading_Condition released torque
    assert servo.temperature > temperature_before
    # re-enabling torque clears the latch; removing the obstacle lets the joint reach its goal
    emu.unblock(1)
    ph.write1ByteTxRx(port, 1, ADDR["Torque_Enable"], 1)
    emu.advance(1.0)
    assert ph.read1ByteTxRx(port, 1, ADDR["Status"])[2] == 0
    assert servo.present_position == 3000


def test_sustained_stall_overheats(emu, bus):
    port, ph = bus
    servo = emu.servo(3)
    ph.write1ByteTxRx(port, 3, ADDR["Overload_Torque"], 100)  # protection never trips: heat builds up
    ph.write1ByteTxRx(port, 3, ADDR["Torque_Enable"], 1)
    emu.block(3, 2100)
    ph.write2ByteTxRx(port, 3, ADDR["Goal_Position"], 2500)
    emu.advance(60.0)
    temperature = ph.read1ByteTxRx(port, 3, ADDR["Present_Temperature"])[0]
    assert 55 <= temperature <= 75
    for _ in range(20):  # Max_Temperature_Limit 70 °C is reached within a few minutes
        emu.advance(10.0)
        temperature, _, error = ph.read1ByteTxRx(port, 3, ADDR["Present_Temperature"])
        if error:
            break
    assert error == ErrorBit.OVERHEAT and temperature >= 68
    assert not servo.torque_enabled  # Unloading_Condition includes overheat
    emu.advance(60.0)
    assert ph.read1ByteTxRx(port, 3, ADDR["Status"])[:2] == (ErrorBit.OVERHEAT, scs.COMM_SUCCESS)  # latched
    ph.write1ByteTxRx(port, 3, ADDR["Torque_Enable"], 0)  # acknowledging clears it once cooled down
    assert ph.read1ByteTxRx(port, 3, ADDR["Status"])[0] == 0
    emu.advance(600.0)  # cools down once released
    assert ph.read1ByteTxRx(port, 3, ADDR["Present_Temperature"])[0] < 40


def test_voltage_outside_window_sets_voltage_bit(emu, bus):
    port, ph = bus
    assert ph.read1ByteTxRx(port, 1, ADDR["Present_Voltage"])[0] == 74
    emu.servo(1).set_voltage(12.0)  # a 7.4 V servo on a 12 V supply
    value, _, error = ph.read1ByteTxRx(port, 1, ADDR["Present_Voltage"])
    assert value == 120 and error == ErrorBit.VOLTAGE


def test_response_status_level_zero_answers_only_reads(emu, bus):
    port, ph = bus
    ph.write1ByteTxRx(port, 1, ADDR["Response_Status_Level"], 0)
    assert ph.write1ByteTxRx(port, 1, ADDR["Acceleration"], 10)[0] == scs.COMM_RX_TIMEOUT
    assert emu.servo(1).get("Acceleration") == 10
    assert ph.read1ByteTxRx(port, 1, ADDR["Acceleration"])[:2] == (10, scs.COMM_SUCCESS)


def test_reg_write_waits_for_action(emu, bus):
    port, ph = bus
    assert ph.regWriteTxRx(port, 1, ADDR["Acceleration"], 1, [77]) == (scs.COMM_SUCCESS, 0)
    assert emu.servo(1).get("Acceleration") == 0
    assert ph.action(port, scs.BROADCAST_ID) == scs.COMM_SUCCESS
    assert wait_until(lambda: emu.servo(1).get("Acceleration") == 77)


def test_silent_servo_breaks_sync_read_and_single_reads(emu, bus):
    port, ph = bus
    emu.faults.silence(2)
    comm, _ = sync_read(port, ph, [1, 2, 3], ADDR["Present_Position"], 2)
    assert comm == scs.COMM_RX_TIMEOUT
    assert ph.read2ByteTxRx(port, 2, ADDR["Present_Position"])[1] == scs.COMM_RX_TIMEOUT
    assert ph.read2ByteTxRx(port, 3, ADDR["Present_Position"])[1] == scs.COMM_SUCCESS
    emu.faults.unsilence(2)
    assert sync_read(port, ph, [1, 2, 3], ADDR["Present_Position"], 2)[0] == scs.COMM_SUCCESS


def test_corrupt_and_truncated_replies(emu, bus):
    port, ph = bus
    emu.faults.corrupt_next(1)
    assert ph.read2ByteTxRx(port, 1, ADDR["Present_Position"])[1] == scs.COMM_RX_CORRUPT
    assert ph.read2ByteTxRx(port, 1, ADDR["Present_Position"])[1] == scs.COMM_SUCCESS
    emu.faults.truncate_next(1)
    assert ph.read2ByteTxRx(port, 1, ADDR["Present_Position"])[1] == scs.COMM_RX_CORRUPT
    port.ser.reset_input_buffer()
    emu.faults.corrupt_probability(1.0)
    assert sync_read(port, ph, [1, 2, 3], ADDR["Present_Position"], 2)[0] == scs.COMM_RX_CORRUPT
    emu.faults.clear()
    time.sleep(0.01)
    port.ser.reset_input_buffer()  # the replies after the first corrupt one are still queued
    assert sync_read(port, ph, [1, 2, 3], ADDR["Present_Position"], 2)[0] == scs.COMM_SUCCESS


def test_reordered_and_duplicated_replies(emu, bus):
    port, ph = bus
    for servo_id, raw in ((1, 100), (2, 200), (3, 300)):
        emu.servo(servo_id).set_physical_position(raw)
    emu.faults.reorder_replies(True)
    comm, _ = sync_read(port, ph, [1, 2, 3], ADDR["Present_Position"], 2)
    assert comm == scs.COMM_RX_TIMEOUT  # SDK 1.0.0 expects the listed order
    emu.faults.reorder_replies(False)
    port.ser.reset_input_buffer()
    emu.faults.duplicate_replies(True)
    assert ph.read2ByteTxRx(port, 1, ADDR["Present_Position"])[:2] == (100, scs.COMM_SUCCESS)
    assert port.ser.in_waiting > 0 or wait_until(
        lambda: port.ser.in_waiting > 0
    )  # the duplicate is left over
    # an unflushed duplicate answers the next read of the same id with a stale value
    emu.faults.duplicate_replies(False)
    emu.servo(1).set_physical_position(150)
    assert ph.read2ByteTxRx(port, 1, ADDR["Present_Position"])[0] == 100
    port.ser.reset_input_buffer()
    assert ph.read2ByteTxRx(port, 1, ADDR["Present_Position"])[0] == 150


def test_late_replies_time_out(emu, bus):
    port, ph = bus
    emu.faults.delay_replies(DEADLINE_MS / 1000 + 0.03, count=1)
    assert ph.read2ByteTxRx(port, 1, ADDR["Present_Position"])[1] == scs.COMM_RX_TIMEOUT
    assert wait_until(lambda: port.ser.in_waiting > 0)  # the late reply arrives afterwards


def test_injected_error_bits_show_in_single_reads_not_in_sync_read(emu, bus):
    port, ph = bus
    emu.faults.set_error_bits(2, ErrorBit.OVERHEAT | ErrorBit.OVERLOAD)
    value, comm, error = ph.read1ByteTxRx(port, 2, ADDR["Status"])
    assert comm == scs.COMM_SUCCESS and error == 0x24 and value == 0x24
    assert ph.getRxPacketError(error)  # the SDK names (the first of) them
    assert sync_read(port, ph, [1, 2, 3], ADDR["Present_Position"], 2)[0] == scs.COMM_SUCCESS
    assert emu.servo(2).torque_enabled is False
    emu.faults.clear_error_bits(2)
    assert ph.read1ByteTxRx(port, 2, ADDR["Status"])[2] == 0


def test_device_vanishes_and_comes_back_at_the_same_path(emu, bus):
    port, ph = bus
    path = emu.port
    emu.disconnect()
    assert not os.path.exists(path)
    with pytest.raises(Exception):  # noqa: B017 - pyserial/termios raise OSError subclasses or SerialException
        ph.read2ByteTxRx(port, 1, ADDR["Present_Position"])
    port.is_using = False
    port.closePort()
    emu.reconnect()
    assert os.path.islink(path) and emu.pty_name is not None
    assert port.openPort()
    assert ph.read2ByteTxRx(port, 1, ADDR["Present_Position"])[:2] == (2048, scs.COMM_SUCCESS)


def test_broadcast_ping_policy():
    with BusEmulator(ids=(4, 7), broadcast_ping="single") as emu:
        port = TolerantPortHandler(emu.port, DEADLINE_MS)
        port.openPort()
        try:
            ph = scs.PacketHandler(0)
            ph.txPacket(port, [0xFF, 0xFF, scs.BROADCAST_ID, 2, scs.INST_PING, 0])
            port.is_using = False  # txPacket alone leaves the SDK's busy flag set
            time.sleep(0.05)
            assert port.ser.in_waiting == 0  # two servos: nobody answers a broadcast ping
            assert ph.ping(port, 7)[:2] == (777, scs.COMM_SUCCESS)
        finally:
            port.closePort()


def test_preset_follower_has_lerobot_eeprom():
    with BusEmulator(preset="so101_follower") as emu:
        assert emu.ids == [1, 2, 3, 4, 5, 6]
        gripper = emu.servo(6)
        assert gripper.get("Max_Torque_Limit") == 500 and gripper.get("Torque_Limit") == 500
        assert gripper.get("Return_Delay_Time") == 0
        for servo_id in emu.ids:
            servo = emu.servo(servo_id)
            assert (
                servo.get("Min_Position_Limit") <= servo.present_position <= servo.get("Max_Position_Limit")
            )


def test_unknown_servo_gives_clear_error(emu):
    with pytest.raises(KeyError, match="ids \\[1, 2, 3\\]"):
        emu.servo(9)


def test_cli_runs_until_interrupted(tmp_path):
    link = tmp_path / "so101"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "so100_driver.emulator", "--link", str(link), "--preset", "so101_leader"]
    proc = subprocess.Popen(
        [*command, "--split-replies", "3", "--split-gap-ms", "1"],  # the ping's reply comes in 3 USB packets
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert "emulating servos [1, 2, 3, 4, 5, 6]" in proc.stdout.readline()
        port = TolerantPortHandler(str(link), DEADLINE_MS)
        assert port.openPort()
        assert scs.PacketHandler(0).ping(port, 6)[:2] == (777, scs.COMM_SUCCESS)
        port.closePort()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "served" in out
        assert not link.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_refuses_a_negative_packet_size(tmp_path):
    command = [sys.executable, "-m", "so100_driver.emulator", "--link", str(tmp_path / "bus")]
    proc = subprocess.run([*command, "--split-replies", "-1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--split-replies and --split-gap-ms must be >= 0" in proc.stderr
    assert not (tmp_path / "bus").exists()


def test_register_backdoor(emu):
    servo = emu.servo(1)
    servo.set("Model_Number", 1234)  # a clone with another model number
    assert servo.get("Model_Number") == 1234
    with pytest.raises(ValueError, match="set_physical_position"):
        servo.set("Present_Position", 5)
    with pytest.raises(KeyError, match="unknown STS3215 register"):
        servo.get("Speed")
    servo.set_physical_position(1000)
    servo.set("Torque_Enable", 1)  # side effects as over the bus: starts from where the joint is ...
    emu.advance(0.02)
    assert servo.torque_enabled and 1000 < servo.present_position <= 1000 + 3000 * 0.03
    emu.advance(1.0)
    assert servo.present_position == servo.get("Goal_Position") == 2048  # ... and chases the stale goal


def test_overload_lockout_mutes_the_servo_until_power_cycle(emu, bus):
    port, ph = bus
    emu.faults.lockout_on_overload(2)
    ph.write1ByteTxRx(port, 2, ADDR["Torque_Enable"], 1)
    emu.block(2, 2100)
    ph.write2ByteTxRx(port, 2, ADDR["Goal_Position"], 2600)
    emu.advance(2.5)  # Protection_Time 2 s at full load
    assert ph.ping(port, 2)[1] == scs.COMM_RX_TIMEOUT
    assert sync_read(port, ph, [1, 2, 3], ADDR["Present_Position"], 2)[0] == scs.COMM_RX_TIMEOUT
    emu.power_cycle()
    assert ph.ping(port, 2) == (777, scs.COMM_SUCCESS, 0)
    assert emu.servo(2).present_position == 2100


def test_wait_idle_is_a_barrier_for_reply_less_writes(emu, bus):
    port, ph = bus
    writer = scs.GroupSyncWrite(port, ph, ADDR["Acceleration"], 1)
    for servo_id in (1, 2, 3):
        writer.addParam(servo_id, [0])
    for value in range(1, 60):
        for servo_id in (1, 2, 3):
            writer.changeParam(servo_id, [value])
        assert writer.txPacket() == scs.COMM_SUCCESS
        assert emu.wait_idle()
        assert [emu.servo(i).get("Acceleration") for i in (1, 2, 3)] == [value] * 3
    assert emu.stats["inst_0x83"] == 59 and emu.stats["inst_0x7e"] == 0  # fences are not bus traffic
    emu.disconnect()
    assert emu.wait_idle()  # nothing to wait for
