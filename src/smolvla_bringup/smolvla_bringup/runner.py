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

Progress goes to stdout in plain words, from the nodes' status topics (:mod:`smolvla_bringup.progress`):
model loaded, instruction received, first chunk, executing / idle, arm faults and torque changes, the
arm's torque-off at shutdown. Exit codes: 0 after a clean stop, 1 when a node of the graph could not start
its work (the policy reached ERROR: checkpoint or configuration unusable; the run is shut down cleanly and
the policy's reason printed), 2 for a bad command line or a node that refused its parameters.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from smolvla_bringup import graph, hints
from smolvla_bringup.progress import Progress

#: how long shutdown waits for the arm's last status (its torque-off) before the monitor is closed
ARM_FAREWELL_S = 2.0


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
        report: Callable[[str], None] | None = None,
    ):
        """``report``: print progress lines there (see :mod:`smolvla_bringup.progress`); a policy that
        cannot start then stops the run and sets :attr:`failure`."""
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
        self.report = report
        self.monitor: StatusMonitor | None = None
        self.starting: graph.NodeSpec | None = None  # the node being built (names a startup error)
        self.failure: str | None = None  # why a node could not start its work (exit code 1)

    def start(self, context=None) -> None:
        import rclpy

        self.context = context or rclpy.Context()
        if not self.context.ok():
            rclpy.init(context=self.context, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
        if self.report is not None:
            self.monitor = StatusMonitor(self, {spec.name for spec in self.specs})
        try:
            for spec in self.specs:
                self.starting = spec
                cls = spec.load_class()
                cli = ros_cli_args(spec, self.param_files, self.overrides.get(spec.name, {}), self.namespace)
                self.nodes.append(cls(context=self.context, cli_args=cli))
        except Exception:
            try:
                self.shutdown()
            except Exception as cleanup_error:  # keep the startup error (it names the bad parameter) on top
                print(f"smolvla-run: while cleaning up: {cleanup_error!r}", file=sys.stderr)
            raise
        self.starting = None
        for node in self.nodes:
            self._spin_in_thread(node)

    def fail(self, reason: str) -> None:
        """End the run with exit code 1: a node of the graph cannot do its work."""
        if self.failure is None:
            self.failure = reason
        self.stop()

    def parameter_names(self, node_name: str) -> set[str]:
        """The parameters a running node of the graph declared (to recognise them in its messages)."""
        try:
            node = next((n for n in list(self.nodes) if n.get_name() == node_name), None)
            return set(node.get_parameters_by_prefix("")) if node is not None else set()
        except Exception:  # the node is being destroyed (shutdown)
            return set()

    def add_node(self, node) -> None:
        """Spin an extra node (made in ``self.context``, e.g. a recorder) with the graph; destroyed first."""
        self.nodes.append(node)
        self._spin_in_thread(node)

    def _spin_in_thread(self, node, stop: threading.Event | None = None) -> tuple:
        from rclpy.executors import SingleThreadedExecutor

        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(node)
        thread = threading.Thread(
            target=self._spin,
            args=(executor, stop or self._stop),
            name=f"spin_{node.get_name()}",
            daemon=True,
        )
        if stop is None:
            self._executors.append(executor)
            self._spinners.append(thread)
        thread.start()
        return executor, thread

    def _spin(self, executor, stop: threading.Event) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while not stop.is_set() and self.context.ok():
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
        # the arm node (not the simulation) publishes a last status when it stops: torque off
        farewell = graph.ARM in self.specs and any(n.get_name() == graph.ARM.name for n in self.nodes)
        for node in reversed(self.nodes):
            try:
                node.destroy_node()
            except Exception as err:  # keep destroying the others: the arm must still get torque off
                print(f"smolvla-run: error while stopping {node.get_name()}: {err}", file=sys.stderr)
        self.nodes.clear()
        if self.monitor is not None:  # after the arm: it reports the arm's torque-off
            self.monitor.close(farewell)
            self.monitor = None
        if self.context.ok():
            rclpy.shutdown(context=self.context)


class StatusMonitor:
    """A node beside the graph, in its namespace: the status topics of the graph's policy, executor and arm
    go through a :class:`Progress`, whose lines go to the runner's ``report``. It is spun on its own thread
    and closed last, so it still sees the arm's final status (torque off) during shutdown."""

    def __init__(self, runner: Runner, nodes: set[str]) -> None:
        import rclpy

        from smolvla_common.qos import LATCHED, RELIABLE
        from smolvla_msgs.msg import ArmStatus, ExecutorStatus, PolicyStatus

        self.runner = runner
        self.progress = Progress(hint=self._hint)
        self.lock = threading.Lock()
        self.arm_farewell = threading.Event()
        self.node = rclpy.create_node(
            f"smolvla_run_{os.getpid()}",
            context=runner.context,
            namespace=runner.namespace or None,
            start_parameter_services=False,
        )
        topics = (
            ("policy", PolicyStatus, "smolvla/policy_status", RELIABLE, self.progress.on_policy),
            ("executor", ExecutorStatus, "smolvla/executor_status", RELIABLE, self.progress.on_executor),
            ("arm", ArmStatus, "arm/status", LATCHED, self._on_arm),
        )
        for name, msg_type, topic, qos, handler in topics:
            if name in nodes:
                self.node.create_subscription(msg_type, topic, lambda m, h=handler: self._feed(h, m), qos)
        self._stop = threading.Event()
        self._executor, self._thread = runner._spin_in_thread(self.node, self._stop)

    def _hint(self, node: str, text: str) -> str:
        return hints.for_runner(node, text, self.runner.parameter_names(node))

    def _on_arm(self, msg, now: float) -> list[str]:
        if "shutdown" in msg.message:
            self.arm_farewell.set()
        return self.progress.on_arm(msg, now)

    def _feed(self, handler, msg) -> None:
        with self.lock:
            lines = handler(msg, time.monotonic())
            fatal = self.progress.fatal
        for line in lines:
            self.runner.report(line)
        if fatal is not None:
            self.runner.fail(f"the policy node could not start: {fatal}")

    def close(self, arm_farewell: bool) -> None:
        """Stop; with ``arm_farewell``, after waiting a little for the arm's last status (torque off)."""
        if arm_farewell and self.runner.context.ok():
            self.arm_farewell.wait(ARM_FAREWELL_S)
        self._stop.set()
        self._thread.join(timeout=5)
        self._executor.shutdown(timeout_sec=2)
        self.node.destroy_node()


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


_PRINT_LOCK = threading.Lock()


def report(line: str) -> None:
    """A progress line on stdout, whole (the monitor thread and the main thread both print)."""
    with _PRINT_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def fitted_parameter_file(values: dict[str, str], specs, folder: Path) -> list[Path]:
    """The simulation fitted to the ``--checkpoint`` (its cameras, its image size) as a parameter file in
    ``folder``, said in a progress line; none when there is nothing to fit (see
    :func:`graph.checkpoint_parameters`)."""
    fitted = graph.checkpoint_parameters(values, specs)
    if not fitted:
        return []
    sim = fitted[graph.SIM.name]
    report(
        f"smolvla-run: the simulation renders the checkpoint's cameras ({', '.join(sim['cameras'])}) at "
        f"{sim['camera_width']}x{sim['camera_height']}; a --params file that sets cameras decides instead"
    )
    path = folder / "fitted-to-checkpoint.yaml"
    path.write_text(graph.parameter_file_text(fitted))
    return [path]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="smolvla-run-") as folder:
        return run(args, Path(folder))


def run(args: argparse.Namespace, scratch: Path) -> int:
    """Start the graph the command line names and spin it until it stops; ``scratch``: a folder for
    generated parameter files."""
    files, specs = graph.graph(args.graph)
    values = {name: getattr(args, name) for name in graph.ARGUMENTS}
    try:
        overrides = graph.overrides(values, specs)
        fitted = fitted_parameter_file(values, specs, scratch)
        runner = Runner(specs, [*files, *fitted, *args.params], overrides, args.namespace, report=report)
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
        node = runner.starting.name if runner.starting else args.graph
        reason = hints.for_runner(node, str(err))
        print(f"smolvla-run: could not start the {args.graph} graph: {node}: {reason}", file=sys.stderr)
        return 2
    names = ", ".join(node.get_name() for node in runner.nodes)
    report(f"smolvla-run: {args.graph} running ({names}); Ctrl-C to stop")
    try:
        runner.wait(args.duration)
    finally:
        runner.shutdown()
    if runner.failure:
        print(f"smolvla-run: stopped: {runner.failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
