"""`smolvla-run sim|real|robot|policy`: the suite's nodes in one process, without `launch`.

For installs that have rclpy but not `launch`/`launch_ros` (the ROS 2 wheels from PyPI). It starts the
same nodes as the launch files (see :mod:`smolvla_bringup.graph`), with the same names and YAML files.
Execution is multi-threaded the way separate processes would be: every node spins its own single-threaded
executor on its own thread, so a busy node never delays another node's callbacks (the executor's control
ticks, the arm's bus cycle). rclpy 9.1.2's MultiThreadedExecutor is not used: it stalls for whole wait
timeouts on an idle machine (16 of 300 timer callbacks ran in 3 s), which starved the control ticks.
The slow work (inference, rendering, the servo bus, camera capture) also runs on the nodes' own threads.
Ctrl-C (SIGINT) or SIGTERM shuts down cleanly: nodes are destroyed in reverse start order, so the arm node
disables torque (as configured) after the executor stopped sending.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from smolvla_bringup import graph


def ros_cli_args(
    spec: graph.NodeSpec, param_files: Sequence[Path], params: dict, namespace: str = ""
) -> list[str]:
    """The node's command line: its name and namespace, the YAML files, then single-parameter overrides."""
    args = ["--ros-args", "-r", f"__node:={spec.name}"]
    if namespace:
        args += ["-r", f"__ns:={namespace}"]
    for path in param_files:
        args += ["--params-file", str(path)]
    for key, value in params.items():
        text = (
            str(value).lower()
            if isinstance(value, bool)
            else repr(value)
            if isinstance(value, float)
            else value
        )
        args += ["-p", f"{key}:={text}"]
    return args


class Runner:
    """Creates the nodes of a graph in one rclpy context and spins them until asked to stop."""

    def __init__(
        self,
        specs: Sequence[graph.NodeSpec],
        param_files: Sequence[Path],
        overrides=None,
        namespace: str = "",
    ):
        missing = [str(p) for p in param_files if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"parameter file(s) not found: {', '.join(missing)}")
        self.namespace = graph.check_namespace(namespace)
        self.specs = list(specs)
        self.param_files = list(param_files)
        self.overrides = overrides or {}
        self.nodes: list = []
        self._executors: list = []
        self._spinners: list[threading.Thread] = []
        self._stop = threading.Event()

    def start(self, context=None) -> None:
        import rclpy

        self.context = context or rclpy.Context()
        if not self.context.ok():
            rclpy.init(context=self.context, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
        try:
            for spec in self.specs:
                cls = spec.load_class()
                cli = ros_cli_args(spec, self.param_files, self.overrides.get(spec.name, {}), self.namespace)
                self.nodes.append(cls(context=self.context, cli_args=cli))
        except Exception:
            try:
                self.shutdown()
            except Exception as cleanup_error:  # keep the startup error (it names the bad parameter) on top
                print(f"smolvla-run: while cleaning up: {cleanup_error!r}", file=sys.stderr)
            raise
        for node in self.nodes:
            self._spin_in_thread(node)

    def add_node(self, node) -> None:
        """Spin an extra node (made in ``self.context``, e.g. a recorder) with the graph; destroyed first."""
        self.nodes.append(node)
        self._spin_in_thread(node)

    def _spin_in_thread(self, node) -> None:
        from rclpy.executors import SingleThreadedExecutor

        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(node)
        thread = threading.Thread(
            target=self._spin, args=(executor,), name=f"spin_{node.get_name()}", daemon=True
        )
        self._executors.append(executor)
        self._spinners.append(thread)
        thread.start()

    def _spin(self, executor) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while not self._stop.is_set() and self.context.ok():
                executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass

    def stop(self) -> None:
        self._stop.set()

    def wait(self, duration: float | None = None) -> None:
        deadline = None if duration is None else time.monotonic() + duration
        while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.1)

    def shutdown(self) -> None:
        """Stop spinning, destroy nodes in reverse order (the arm last), shut the context down."""
        import rclpy

        self._stop.set()
        for spinner in self._spinners:
            spinner.join(timeout=5)
        for executor in self._executors:
            executor.shutdown(timeout_sec=2)
        self._spinners.clear()
        self._executors.clear()
        for node in reversed(self.nodes):
            try:
                node.destroy_node()
            except Exception as err:  # keep destroying the others: the arm must still get torque off
                print(f"smolvla-run: error while stopping {node.get_name()}: {err}", file=sys.stderr)
        self.nodes.clear()
        if self.context.ok():
            rclpy.shutdown(context=self.context)


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog="smolvla-run", description=__doc__.splitlines()[0])
    parser.add_argument("graph", choices=sorted(graph.GRAPHS), help="which nodes to start")
    parser.add_argument(
        "--params",
        action="append",
        default=[],
        type=Path,
        help="extra YAML parameter file(s), applied after the graph's defaults (repeatable)",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument(
        "--namespace", default="", help="run the graph in this namespace (e.g. left: /left/joint_states, ...)"
    )
    for name, argument in graph.ARGUMENTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default="", help=argument.help)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    files, specs = graph.graph(args.graph)
    values = {name: getattr(args, name) for name in graph.ARGUMENTS}
    try:
        runner = Runner(specs, [*files, *args.params], graph.overrides(values, specs), args.namespace)
    except (ValueError, FileNotFoundError) as err:
        print(f"smolvla-run: {err}", file=sys.stderr)
        return 2

    def request_stop(signum, _frame):
        print(f"\nsmolvla-run: {signal.Signals(signum).name} received, shutting down", file=sys.stderr)
        runner.stop()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        runner.start()
    except Exception as err:
        print(f"smolvla-run: could not start the {args.graph} graph: {err}", file=sys.stderr)
        return 2
    names = ", ".join(node.get_name() for node in runner.nodes)
    print(f"smolvla-run: {args.graph} running ({names}); Ctrl-C to stop")
    try:
        runner.wait(args.duration)
    finally:
        runner.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
