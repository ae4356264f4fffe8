"""An ``scservo_sdk`` client port with a configurable reply deadline, for tests on loaded machines.

SDK 1.0.0 gives up on a reply after ``2 × 16 + 2`` ms. On a busy test machine the emulator thread can be
starved longer than that, which turns a correct exchange into a spurious COMM_RX_TIMEOUT. LeRobot patches
``setPacketTimeout`` the same way for real hardware. The SDK's packet handling is untouched; only its reads
wait for bytes instead of spinning (:class:`so100_driver.bus.WaitingPortHandler`), which would starve the
emulator's thread in the same process.
"""

from __future__ import annotations

from so100_driver.bus import WaitingPortHandler


class TolerantPortHandler(WaitingPortHandler):
    """``PortHandler`` whose packet deadline is wire time + ``deadline_ms`` (SDK default: about 34 ms)."""

    def __init__(self, port_name: str, deadline_ms: float = 34.0) -> None:
        super().__init__(port_name)
        self.deadline_ms = float(deadline_ms)

    def setPacketTimeout(self, packet_length: int) -> None:  # noqa: N802 - SDK method name
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = self.tx_time_per_byte * packet_length + self.deadline_ms


def open_port(port_name: str, deadline_ms: float = 34.0) -> TolerantPortHandler:
    """Open ``port_name`` at 1 Mbaud; raises OSError with the path when it cannot be opened."""
    port = TolerantPortHandler(port_name, deadline_ms)
    if not port.openPort():
        raise OSError(f"cannot open servo bus port {port_name}")
    return port
