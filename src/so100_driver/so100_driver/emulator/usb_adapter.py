"""The device-to-host half of a USB-serial adapter, the way real ones hand replies to the host.

A servo's reply crosses the wire at 1 Mbaud, but the host only sees it when the adapter ships a USB
packet: at most ``packet_bytes`` payload bytes (62 on FTDI chips: 64 minus two status bytes), strictly in
order. Adapters also stall: a busy hub, a latency timer, a CPU in a power state can hold every byte for
tens of milliseconds and then release them all at once. :class:`UsbAdapter` queues outgoing bytes with the
time each packet may leave and a writer thread delivers them; replies are never reordered, so a late reply
always arrives before the replies to the requests sent after it (the property a bus layer can rely on).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

FTDI_PACKET_BYTES = 62
#: After a stall the backlog leaves one packet per USB frame (1 ms at full speed).
BACKLOG_PACKET_GAP_S = 0.001


class UsbAdapter:
    """In-order delivery of reply bytes to the host in USB packets, with injectable delays and stalls.

    ``write`` puts bytes on the host side (the pty master); it is called from the adapter's own thread.
    """

    def __init__(self, write: Callable[[bytes], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._write = write
        self._clock = clock
        self._queue: deque[tuple[float, bytes]] = deque()  # (earliest delivery time, one USB packet)
        self._cond = threading.Condition()
        self._held_until = 0.0
        self._last_due = 0.0
        self._closed = False
        self.packets_sent = 0
        self._thread = threading.Thread(target=self._run, name="usb-adapter", daemon=True)
        self._thread.start()

    def send(self, data: bytes, delay_s: float = 0.0, packet_bytes: int = 0, gap_s: float = 0.0) -> None:
        """Queue ``data`` for the host after ``delay_s``; ``packet_bytes`` > 0 splits it into packets of
        that size, ``gap_s`` apart. Nothing overtakes bytes queued earlier."""
        if not data:
            return
        size = packet_bytes if packet_bytes > 0 else len(data)
        with self._cond:
            due = max(self._clock() + delay_s, self._last_due)
            for start in range(0, len(data), size):
                self._queue.append((due, data[start : start + size]))
                self._last_due = due
                due += gap_s
            self._cond.notify()

    def stall(self, seconds: float) -> None:
        """Hold every byte, queued or still to come, for ``seconds`` from now; then release them in
        ``FTDI_PACKET_BYTES`` packets, one per USB frame (the adapter's buffer drains packet by packet)."""
        with self._cond:
            self._held_until = max(self._held_until, self._clock() + seconds)
            self._cond.notify()

    def discard(self) -> None:
        """Drop everything not yet delivered (the adapter was unplugged)."""
        with self._cond:
            self._queue.clear()
            self._held_until = self._last_due = 0.0

    def idle(self) -> bool:
        with self._cond:
            return not self._queue

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._ready():
                    self._cond.wait(self._wait_time())
                if self._closed:
                    return
                packet = self._next_packet()
            self._write(packet)
            self.packets_sent += 1

    def _ready(self) -> bool:
        now = self._clock()
        return bool(self._queue) and now >= self._held_until and now >= self._queue[0][0]

    def _wait_time(self) -> float | None:
        if not self._queue:
            return None
        return max(0.0, max(self._held_until, self._queue[0][0]) - self._clock())

    def _next_packet(self) -> bytes:
        """The head packet; after a stall the backlog goes out as full adapter packets."""
        due, packet = self._queue.popleft()
        if self._held_until <= 0.0 or due >= self._held_until:
            return packet
        backlog = bytearray(packet)
        while self._queue and self._queue[0][0] <= self._held_until and len(backlog) < FTDI_PACKET_BYTES:
            _, more = self._queue.popleft()
            backlog += more
        if len(backlog) > FTDI_PACKET_BYTES:  # put the rest back at the head, still in order
            self._queue.appendleft((due, bytes(backlog[FTDI_PACKET_BYTES:])))
            del backlog[FTDI_PACKET_BYTES:]
        if self._queue and self._queue[0][0] < self._held_until:  # the rest of the backlog: next frame
            self._held_until = self._clock() + BACKLOG_PACKET_GAP_S
        return bytes(backlog)
