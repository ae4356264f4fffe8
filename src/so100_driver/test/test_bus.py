"""Bus layer against the emulator: the real scservo_sdk over a real pty, with injected faults."""

import subprocess
import sys
import time

import pytest

from so100_driver.bus import BusDisconnectedError, BusError, BusPortBusyError, FeetechBus
from so100_driver.emulator.bus_emulator import BusEmulator
from so100_driver.protocol import ErrorBit

IDS = [1, 2, 3, 4, 5, 6]
# generous: the in-process emulator thread can be starved for tens of ms on a loaded CI machine
TIMEOUT_MS = 100.0
BUDGET_MS = 200.0
SLACK_S = 0.5


@pytest.fixture
def emu():
    positions = {i: 1000 + 300 * i for i in IDS}
    with BusEmulator(ids=IDS, positions=positions) as emulator:
        yield emulator


@pytest.fixture
def bus(emu):
    with FeetechBus(emu.port, timeout_ms=TIMEOUT_MS, retries=2, retry_budget_ms=BUDGET_MS) as b:
        yield b


def truth(emu, ids=IDS):
    return {i: emu.servo(i).present_position for i in ids}


def test_sync_read_returns_every_position_with_status_bytes(emu, bus):
    read = bus.read_register(IDS, "Present_Position")
    assert read.missing == ()
    assert read.values == truth(emu)
    assert read.errors == dict.fromkeys(IDS, 0)
    assert bus.stats.failed_transactions == 0


def test_silent_servo_is_missing_and_the_others_are_fresh(emu, bus):
    bus.read_register(IDS, "Present_Position")
    for i in IDS:  # change every position so that last cycle's values would be wrong
        emu.servo(i).set_physical_position(2500 - 100 * i)
    emu.faults.silence(3)
    started = time.monotonic()
    read = bus.read_register(IDS, "Present_Position")
    elapsed = time.monotonic() - started
    assert read.missing == (3,)
    assert 3 not in read.values  # never a 0 or a stale value for the silent servo
    expected = truth(emu)
    assert read.values == {i: expected[i] for i in IDS if i != 3}
    assert bus.stats.timeouts >= 1 and bus.stats.failed_transactions == 1
    assert elapsed < (BUDGET_MS + TIMEOUT_MS) / 1000 + SLACK_S  # bounded: budget + the attempt running


@pytest.mark.parametrize("fault", ["reorder", "duplicate"])
def test_reordered_or_duplicated_replies_are_matched_by_id(emu, bus, fault):
    if fault == "reorder":
        emu.faults.reorder_replies()
    else:
        emu.faults.duplicate_replies()
    for _ in range(3):
        read = bus.read_register(IDS, "Present_Position")
        assert read.missing == ()
        assert read.values == truth(emu)
    assert bus.stats.failed_transactions == 0
    if fault == "duplicate":
        assert bus.stats.duplicates + bus.stats.flushes > 0


def test_corrupt_checksum_is_retried(emu, bus):
    emu.faults.corrupt_next(1)
    read = bus.read_register(IDS, "Present_Position")
    assert read.missing == ()
    assert read.values == truth(emu)
    assert bus.stats.corrupt >= 1 and bus.stats.retries >= 1


def test_truncated_reply_is_retried(emu, bus):
    emu.faults.truncate_next(1)
    read = bus.read_register(IDS, "Present_Position")
    assert read.missing == ()
    assert read.values == truth(emu)
    assert bus.stats.corrupt + bus.stats.timeouts >= 1


def test_error_bits_of_sync_read_replies_are_kept(emu, bus):
    emu.faults.set_error_bits(2, ErrorBit.OVERLOAD | ErrorBit.VOLTAGE)
    read = bus.read_register(IDS, "Present_Position")
    assert read.errors[2] == ErrorBit.OVERLOAD | ErrorBit.VOLTAGE
    assert all(read.errors[i] == 0 for i in IDS if i != 2)


def test_late_reply_does_not_poison_the_next_read(emu, bus):
    emu.faults.delay_replies(2.5 * TIMEOUT_MS / 1000, count=1)
    first = bus.read([1], 56, 2, retries=0)
    assert first.missing == (1,)
    time.sleep(3 * TIMEOUT_MS / 1000)  # the late reply arrives now and sits in the input buffer
    emu.servo(1).set_physical_position(3000)
    read = bus.read_register([1], "Present_Position", retries=0)
    assert read.values == {1: emu.servo(1).present_position}
    assert bus.stats.flushes >= 1


@pytest.mark.parametrize("stall_ms", [35, 60, 100])
def test_replies_held_by_a_stalled_adapter_never_answer_a_later_request(emu, stall_ms):
    """Item 1 of the arm-safety issue: a USB adapter holds the replies to a Max_Position_Limit read for
    35-100 ms, then releases the backlog in 62-byte packets. The next read (Present_Position, the same
    length) must get positions, never the late limit replies."""
    with FeetechBus(emu.port, timeout_ms=30.0, retries=2, retry_budget_ms=40.0) as bus:  # real settings
        for i in IDS:
            emu.servo(i).set("Max_Position_Limit", 4000 - i)  # distinct from every position
        emu.faults.stall_replies(stall_ms / 1000, address=11)
        limits = bus.read_register(IDS, "Max_Position_Limit")
        assert all(v == 4000 - i for i, v in limits.values.items())  # late or not, never wrong
        for _ in range(20):
            read = bus.read_register(IDS, "Present_Position")
            assert read.values == {i: v for i, v in truth(emu).items() if i in read.values}
            time.sleep(0.005)
        assert read.missing == ()
        assert bus.stats.late + bus.stats.flushes > 0 or limits.missing  # the late replies were seen


@pytest.mark.parametrize("split", [None, 16])
def test_no_reading_is_older_than_its_request(emu, split):
    """A 100 ms stall while the servos move, with reads like the control cycle's (all positions, then
    one servo's telemetry), the backlog arriving in 62-byte packets or trickling in 16-byte pieces:
    every value handed out is the one at its request."""
    with FeetechBus(emu.port, timeout_ms=30.0, retries=2, retry_budget_ms=40.0) as bus:
        if split:
            emu.faults.split_replies(split, gap_s=0.003)
        emu.faults.stall_replies(0.1)
        answered = 0
        for k in range(40):
            for i in IDS:
                emu.servo(i).set_physical_position(1000 + 10 * k + i)
            read = bus.read_register(IDS, "Present_Position")
            assert read.values == {i: 1000 + 10 * k + i for i in read.values}, f"stale data in cycle {k}"
            tel = bus.read_telemetry(IDS[k % 6], retries=0)
            assert tel is None or tel.position == 1000 + 10 * k + IDS[k % 6], f"stale telemetry in cycle {k}"
            answered += not read.missing
            time.sleep(0.005)
        # the backlog is dropped as late replies, or flushed when it came in before the next request
        assert answered >= 20 and bus.stats.late + bus.stats.flushes > 0


@pytest.mark.parametrize(("packet_bytes", "gap_ms"), [(62, 3.0), (5, 2.0), (7, 45.0)])
def test_replies_split_into_usb_packets(emu, packet_bytes, gap_ms):
    """Replies that reach the host in pieces are reassembled; pieces too late fail, never misread.

    The emulator's pieces come from a thread of this process: on a loaded machine one can be scheduled
    late, so a reply that should fit the 30 ms deadline may miss it now and then (it is then missing, never
    wrong); most must get through.
    """
    cycles, positions_read, telemetry_read = 10, 0, 0
    with FeetechBus(emu.port, timeout_ms=30.0, retries=2, retry_budget_ms=40.0) as bus:
        emu.faults.split_replies(packet_bytes, gap_s=gap_ms / 1000)
        for k in range(cycles):
            for i in IDS:
                emu.servo(i).set_physical_position(1500 + 20 * k + i)
            read = bus.read_register(IDS, "Present_Position")
            assert read.values == {i: 1500 + 20 * k + i for i in read.values}
            tel = bus.read_telemetry(2, retries=1)
            assert tel is None or tel.position == 1500 + 20 * k + 2
            positions_read += not read.missing
            telemetry_read += tel is not None
    if gap_ms < 30:  # a whole reply within 8 pieces x 3 ms
        assert positions_read >= cycles - 2 and telemetry_read >= cycles - 2, bus.stats
    else:  # the 37-byte telemetry reply needs 6 pieces, 225 ms: it can never make the deadline
        assert telemetry_read == 0


def test_second_program_on_the_port_is_refused_and_the_first_never_notices(emu, bus):
    """Item 5: a second instance (in this process, or another program) cannot open the port at all."""
    bus.read_register(IDS, "Present_Position")
    stats_before = bus.stats.snapshot()
    with pytest.raises(BusPortBusyError, match="in use by another program"):
        FeetechBus(emu.port).open()
    script = (
        "import sys\nfrom so100_driver.bus import FeetechBus, BusPortBusyError\n"
        f"try:\n    FeetechBus({emu.port!r}).open()\nexcept BusPortBusyError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert other.returncode == 3, other.stderr
    assert (
        "in use by another program" in other.stdout and "only one program may drive the arm" in other.stdout
    )
    for _ in range(5):
        assert bus.read_register(IDS, "Present_Position").values == truth(emu)
    after = bus.stats.snapshot()
    for key in ("failed_transactions", "timeouts", "corrupt", "strays", "flushes", "late"):
        assert after[key] == stats_before[key], key
    bus.close()
    FeetechBus(emu.port).open()  # free again once the first one let go


def test_negative_current_is_decoded_with_its_sign(emu, bus):
    """Item 8: Present_Current is sign-magnitude (bit 15), like the load."""
    bus.write_register(3, "Torque_Enable", 1)
    here = emu.servo(3).present_position
    emu.block(3, here - 5)
    bus.write_register(3, "Goal_Position", here - 200)
    time.sleep(0.1)
    tel = bus.read_telemetry(3)
    assert tel.load < 0 and tel.current < 0 and -3000 < tel.current_ma < 0  # not 32768 + 406 units
    assert tel.torque_enabled and tel.goal == here - 200


def test_stuck_port_in_use_flag_is_cleared(emu, bus):
    bus._port.is_using = True  # what an exception between readTx and readRx leaves behind
    assert bus.read_register(IDS, "Present_Position").missing == ()


def test_signed_registers_round_trip(emu, bus):
    bus.write_register(4, "Lock", 0)
    assert bus.write_register(4, "Homing_Offset", -1234) == 0
    assert emu.servo(4).get("Homing_Offset") == -1234
    assert bus.read_register([4], "Homing_Offset").values == {4: -1234}
    bus.sync_write_register("Goal_Position", {5: 1500, 6: 2600})
    assert bus.read_register([5, 6], "Goal_Position").values == {5: 1500, 6: 2600}


def test_write_to_silent_servo_fails_within_bounded_time(emu, bus):
    emu.faults.silence(2)
    started = time.monotonic()
    with pytest.raises(BusError, match="servo 2"):
        bus.write_register(2, "Torque_Enable", 1, retries=1)
    assert time.monotonic() - started < 2 * TIMEOUT_MS / 1000 + SLACK_S


def test_telemetry_block(emu, bus):
    emu.servo(3).set_temperature(47)
    emu.servo(3).set_voltage(7.2)
    tel = bus.read_telemetry(3)
    assert tel.temperature == 47
    assert tel.voltage == pytest.approx(7.2, abs=0.11)
    assert tel.position == emu.servo(3).present_position
    emu.faults.silence(3)
    assert bus.read_telemetry(3, retries=0) is None


def test_usb_drop_raises_and_reopen_at_the_same_path(emu, bus):
    emu.disconnect()
    with pytest.raises(BusDisconnectedError):
        for _ in range(3):  # the first call may still succeed in writing; a read then fails
            bus.read_register(IDS, "Present_Position", retries=0)
    assert not bus.is_open
    with pytest.raises(BusDisconnectedError):
        bus.reopen()
    emu.reconnect()
    bus.reopen()
    read = bus.read_register(IDS, "Present_Position")
    assert read.values == truth(emu)
    assert bus.stats.disconnects == 1 and bus.stats.reconnects == 1


def test_ping_reports_model_number(emu, bus):
    assert bus.ping(1) == 777
    emu.faults.silence(1)
    assert bus.ping(1) is None
