"""Leader arm node: reads a leader arm (torque off) and publishes ``/leader/joint_states``.

With ``mirror_to_commands`` it also publishes each reading as a one-point ``JointTrajectory`` on
``/joint_commands`` for teleoperation (the follower's own range clamp and ``max_step`` still apply).
Nothing is published while a servo is silent or the calibration does not match the servos' EEPROM, so
the follower holds instead of following stale or wrong positions.
"""

from __future__ import annotations

import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from so100_driver.arm_controller import ArmState, LeaderArm, SafetyConfig
from so100_driver.arm_node import (
    DEFAULT_IDS,
    DEFAULT_JOINTS,
    ROBOT_TYPES,
    ParameterError,
    declare_parameters,
    joint_state,
    load_joints,
    open_exclusively,
    to_diagnostic_array,
)
from so100_driver.bus import FeetechBus
from so100_driver.node_main import run_node


class LeaderNode(Node):
    def __init__(self, **kwargs):
        super().__init__("leader", **kwargs)
        defaults = {
            "port": "/dev/ttyACM1",
            "robot_type": "so101",
            "calibration_file": "",
            "joint_names": DEFAULT_JOINTS,
            "motor_ids": DEFAULT_IDS,
            "baudrate": 1_000_000,
            "rate_hz": 100.0,
            "diagnostics_rate_hz": 2.0,
            "bus_timeout_ms": 30.0,
            "bus_retries": 2,
            "reconnect_period_s": 0.5,
            "mirror_to_commands": False,
            "command_time_from_start": 0.0,
        }
        p = declare_parameters(self, defaults)
        if p["robot_type"] not in ROBOT_TYPES:
            raise ParameterError(
                f"parameter 'robot_type' must be one of {ROBOT_TYPES}, got {p['robot_type']!r}"
            )
        for name in ("rate_hz", "diagnostics_rate_hz"):
            if not p[name] > 0:
                raise ParameterError(f"parameter '{name}' must be > 0, got {p[name]}")
        if p["command_time_from_start"] < 0:
            raise ParameterError("parameter 'command_time_from_start' must be >= 0 s")
        self.joint_names = list(p["joint_names"])
        joints = load_joints(p["calibration_file"], self.joint_names, list(p["motor_ids"]), "")
        self.bus = FeetechBus(p["port"], p["baudrate"], p["bus_timeout_ms"], p["bus_retries"])
        open_exclusively(self.bus)
        self.leader = LeaderArm(self.bus, joints, SafetyConfig(reconnect_period_s=p["reconnect_period_s"]))
        self.period = 1.0 / p["rate_hz"]
        self.diagnostics_period = 1.0 / p["diagnostics_rate_hz"]
        self.mirror = p["mirror_to_commands"]
        self.command_delay = p["command_time_from_start"]

        self.state_pub = self.create_publisher(JointState, "/leader/joint_states", 10)
        self.command_pub = (
            self.create_publisher(JointTrajectory, "/joint_commands", 10) if self.mirror else None
        )
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="leader_read", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        leader = self.leader
        if leader.connect():
            if leader.calibration_problems:
                self.get_logger().error(
                    "leader calibration mismatch, not publishing: "
                    + "; ".join(leader.calibration_problems)
                    + ". "
                    + leader.calibration_fix_hint()
                )
        else:
            self.get_logger().error(f"leader bus not available, retrying: {leader.connect_error}")
        next_cycle = time.monotonic()
        next_diag = next_cycle
        while not self._stop.is_set():
            started = time.monotonic()
            result = leader.step()
            stamp = self.get_clock().now().to_msg()
            if result.positions is not None:
                self.state_pub.publish(joint_state(stamp, result, result.positions, self.joint_names))
                if self.command_pub is not None:
                    self.command_pub.publish(self._command(stamp, result.positions))
            for event in leader.drain_events():
                self.get_logger().warning(event)
            if started >= next_diag:
                next_diag = started + self.diagnostics_period
                self.diag_pub.publish(
                    to_diagnostic_array(stamp, leader.reports("leader"), self.bus.port_name)
                )
            next_cycle += self.period
            delay = next_cycle - time.monotonic()
            if delay < -self.period:
                next_cycle = time.monotonic()
            elif delay > 0:
                self._stop.wait(delay)

    def _command(self, stamp, positions: dict[str, float]) -> JointTrajectory:
        msg = JointTrajectory()
        msg.header.stamp = stamp  # when read: the follower ignores commands from before its torque-on
        msg.joint_names = list(self.joint_names)
        point = JointTrajectoryPoint(positions=[float(positions[n]) for n in self.joint_names])
        point.time_from_start.sec = int(self.command_delay)
        point.time_from_start.nanosec = int((self.command_delay % 1.0) * 1e9)
        msg.points = [point]
        return msg

    @property
    def state(self) -> ArmState:
        return self.leader.state

    def stop(self) -> None:
        if not hasattr(self, "_thread"):
            return  # construction failed before the bus was opened: nothing to release
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.leader.shutdown()

    def destroy_node(self) -> None:
        self.stop()
        super().destroy_node()


def main(args=None) -> int:
    return run_node(LeaderNode, "leader_node", args)


if __name__ == "__main__":
    sys.exit(main())
