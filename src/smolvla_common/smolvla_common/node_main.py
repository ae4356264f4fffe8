"""Run one node as a process: the ``main()`` of every node of the suite.

Spins until Ctrl-C or SIGTERM, then destroys the node while its context is still valid, so it can still
disable torque, stop its threads and log. rclpy's own signal handler is not installed (it would
invalidate the context at once); SIGINT and SIGTERM become KeyboardInterrupt instead, also for a node
started in the background, where SIGINT is ignored by default.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_node(
    factory: Callable[[], Node],
    name: str,
    args: list[str] | None = None,
    *,
    startup_errors: tuple[type[BaseException], ...] = (ValueError,),
    executor_factory: Callable[[], Executor] = SingleThreadedExecutor,
) -> int:
    """Build the node with ``factory`` and spin it; exit code 0, or 2 when it refused its parameters.

    ``startup_errors`` raised while the node is being built are printed as ``<name>: <message>`` (they
    name the bad parameter); any other error propagates with its traceback.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
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
        while rclpy.ok():
            executor.spin_once(timeout_sec=0.1)  # returns to Python regularly, so signals are handled
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
