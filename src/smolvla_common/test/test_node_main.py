"""run_node: Ctrl-C and SIGTERM end a busy node cleanly (its destroy_node runs, exit 0, no traceback); a
node that hangs while stopping prints its stacks and exits 1.

Each case runs a real node in its own process: a 1 kHz timer publishing camera-sized images to its own
subscription keeps rclpy's C++ side busy when the signal lands. On Jazzy, a KeyboardInterrupt raised by
the signal handler inside rclpy's message conversion surfaced as a pybind11 ``RuntimeError: Unable to
convert call argument '0'`` (or hung the shutdown) in about one run of these four in three.

The slow build is many short sleeps, as a model load is many short calls: Python acts on a signal between
bytecodes or when a blocking call is interrupted, so a signal that lands just before one long sleep starts
waits for that sleep to end (2 runs in 30 under load with a single 30 s sleep).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

NODE_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from smolvla_common.node_main import run_node

    class Busy(Node):
        def __init__(self):
            if sys.argv[1] == "slow-start":
                print("building", flush=True)
                for _ in range(600):  # 30 s of short blocking calls, as a model load makes
                    time.sleep(0.05)
            if sys.argv[1] == "refuse":
                raise ValueError("parameter 'rate_hz': expected > 0, got -1")
            super().__init__("busy")
            self.count = 0
            self.image = Image(height=480, width=640, encoding="rgb8", step=1920, data=bytes(480 * 1920))
            self.pub = self.create_publisher(Image, "loop", 10)
            self.create_subscription(Image, "loop", self.on_msg, 10)
            self.create_timer(0.001, lambda: self.pub.publish(self.image))

        def on_msg(self, msg):
            self.count += 1
            if self.count == 50:
                print("spinning", flush=True)

        def destroy_node(self):
            print(f"destroyed after {self.count} messages", flush=True)
            if sys.argv[1] == "hang-on-stop":
                time.sleep(60)  # a driver call that never returns
            super().destroy_node()

    sys.exit(run_node(Busy, "busy", shutdown_timeout_s=2.0 if sys.argv[1] == "hang-on-stop" else 13.0))
    """
)


@pytest.fixture(name="start")
def _start_fixture():
    """Start the node script in a process; any process still running after the test is killed."""
    started: list[subprocess.Popen] = []

    def start(mode: str) -> subprocess.Popen:
        command = [sys.executable, "-c", NODE_SCRIPT, mode]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _wait_for_line(process: subprocess.Popen, expected: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if expected in line:
            return
        if not line and process.poll() is not None:
            break
    process.kill()
    pytest.fail(f"the node never printed {expected!r}: {process.communicate()[1]}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGINT, signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_spinning_destroys_the_node_and_exits_zero(start, signum):
    process = start("run")
    _wait_for_line(process, "spinning")
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "destroyed after" in out
    assert "Traceback" not in err, err


def test_a_node_that_hangs_while_stopping_prints_where_and_exits_1(start):
    process = start("hang-on-stop")
    _wait_for_line(process, "spinning")
    stopped = time.monotonic()
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=30)
    assert time.monotonic() - stopped < 20  # destroy_node sleeps 60 s; the watchdog fires after 2 s
    assert process.returncode == 1, err
    assert "Timeout" in err and "in destroy_node" in err, err  # every thread's stack, the hung call in it


def test_ctrl_c_while_the_node_is_built_exits_at_once(start):
    process = start("slow-start")
    _wait_for_line(process, "building")
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert time.monotonic() - started < 20  # the build takes 30 s
    assert process.returncode == 0, err
    assert "destroyed" not in out and "Traceback" not in err


def test_a_refused_parameter_exits_2_with_the_message(start):
    process = start("refuse")
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert err.strip() == "busy: parameter 'rate_hz': expected > 0, got -1"
