"""Run one node as a process: the ``main()`` of every node of the suite.

Spins until Ctrl-C or SIGTERM, then destroys the node while its context is still valid, so it can still
disable torque, stop its threads and log. rclpy's own signal handler is not installed (it would
invalidate the context at once). While the node is being built (a model may take a minute to load),
SIGINT and SIGTERM raise KeyboardInterrupt; once it spins they only set a flag that the spin loop checks
every 0.1 s: an exception raised in the middle of rclpy's C++ calls can surface as a pybind11
``RuntimeError`` instead (seen on Jazzy's rclpy). Both also apply to a node started in the background,
where SIGINT is ignored by default.

A node that has not exited ``shutdown_timeout_s`` after the stop began (a driver call or a DDS call that
never returns) prints the stack of every thread to stderr and exits with code 1, instead of hanging until
``ros2 launch`` kills it: the stacks say where it hung.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading
from collections.abc import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _handle_stop_signals(handler) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


def run_node(
    factory: Callable[[], Node],
    name: str,
    args: list[str] | None = None,
    *,
    startup_errors: tuple[type[BaseException], ...] = (ValueError,),
    executor_factory: Callable[[], Executor] = SingleThreadedExecutor,
    shutdown_timeout_s: float = 13.0,
) -> int:
    """Build the node with ``factory`` and spin it; exit code 0, or 2 when it refused its parameters.

    ``startup_errors`` raised while the node is being built are printed as ``<name>: <message>`` (they
    name the bad parameter); any other error propagates with its traceback. ``shutdown_timeout_s``: 13 s
    by default, longer than the nodes' own bounded waits (the policy node gives a running inference 10 s)
    and shorter than ``ros2 launch``'s wait before SIGKILL (15 s after SIGINT).
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    _handle_stop_signals(_interrupt)
    stop_requested = threading.Event()
    node = None
    executor = None
    try:
        try:
            node = factory()
        except startup_errors as error:
            print(f"{name}: {error}", file=sys.stderr)
            return 2
        executor = executor_factory()
        executor.add_node(node)
        _handle_stop_signals(lambda signum, frame: stop_requested.set())
        while rclpy.ok() and not stop_requested.is_set():
            executor.spin_once(timeout_sec=0.1)  # returns to Python regularly, so signals are handled
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # not cancelled on return: the interpreter's own shutdown (rclpy's contexts, DDS) is covered too
        faulthandler.dump_traceback_later(shutdown_timeout_s, exit=True)
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
