"""`smolvla-run` in its own process, as a user starts it: output collected, stopped with Ctrl-C (SIGINT).

Python's fault handler is on in the child, so a crash of the runner prints every thread's stack into the
collected output instead of vanishing with the process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence


class RunnerProcess:
    """``python -m smolvla_bringup.runner ARGS``; use as a context manager (always stopped on exit)."""

    def __init__(self, args: Sequence[str]):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
        command = [sys.executable, "-m", "smolvla_bringup.runner", *args]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._output: list[str] = []
        self._reader = threading.Thread(target=lambda: self._output.extend(self.process.stdout), daemon=True)
        self._reader.start()
        self.returncode: int | None = None

    @property
    def log(self) -> str:
        return "".join(self._output)

    def lines(self) -> list[str]:
        return self.log.splitlines()

    def wait_for_line(self, prefix: str, timeout: float) -> bool:
        """True once a line starting with ``prefix`` was printed; False after ``timeout`` s or an exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if any(line.startswith(prefix) for line in self.lines()):
                return True
            time.sleep(0.1)
        return any(line.startswith(prefix) for line in self.lines())

    def stop(self, timeout: float = 20.0) -> int | None:
        """Ctrl-C the runner; its exit code, or None when it had to be killed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                self._reader.join(timeout=5)
                return None
        self._reader.join(timeout=5)
        self.returncode = self.process.returncode
        return self.returncode

    def tail(self, characters: int = 4000) -> str:
        return f"--- smolvla-run {' '.join(self.process.args[3:])} ---\n{self.log[-characters:]}"

    def __enter__(self) -> RunnerProcess:
        return self

    def __exit__(self, *_) -> None:
        self.stop()
