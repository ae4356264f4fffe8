"""Leader arm node: reads a leader arm (torque off) and publishes ``~/joint_states`` (``/leader/joint_states``
in the root namespace).

With ``mirror_to_commands`` it also publishes each reading as a one-point ``JointTrajectory`` on
``joint_commands`` for teleoperation (the follower's own range clamp and ``max_step`` still apply).
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

from smolvla_common.node_main import run_node
from smolvla_common.parameters import declare_parameters, require
from smolvla_common.timeutil import duration_msg
from so100_driver.arm.leader import LeaderArm
from so100_driver.arm.link import ArmState
from so100_driver.arm.safety import SafetyConfig
from so100_driver.arm_ros import (
    BUS_PARAMETERS,
    joint_state,
    load_joints,
    open_exclusively,
    to_diagnostic_array,
)
from so100_driver.bus import FeetechBus

PARAMETERS = {
    "port": "/dev/ttyACM1",
    **BUS_PARAMETERS,
    "rate_hz": 100.0,
    "reconnect_period_s": 0.5,
    "mirror_to_commands": False,
    "command_time_from_start": 0.0,
}


class LeaderNode(Node):
    def __init__(self, **kwargs):
        super().__init__(kwargs.pop("node_name", "leader"), **kwargs)
        p = declare_parameters(self, PARAMETERS)
        for name in ("rate_hz", "diagnostics_rate_hz"):
            require(p[name] > 0, name, "a value > 0", p[name])
        require(
            p["command_time_from_start"] >= 0,
            "command_time_from_start",
            "a time >= 0 (s)",
            p["command_time_from_start"],
        )
        self.joint_names = list(p["joint_names"])
        joints = load_joints(p["calibration_file"], self.joint_names, p["motor_ids"], "")
        self.bus = FeetechBus(p["port"], p["baudrate"], p["bus_timeout_ms"], p["bus_retries"])
        open_exclusively(self.bus)
        self.leader = LeaderArm(self.bus, joints, SafetyConfig(reconnect_period_s=p["reconnect_period_s"]))
        self.period = 1.0 / p["rate_hz"]
        self.diagnostics_period = 1.0 / p["diagnostics_rate_hz"]
        self.mirror = p["mirror_to_commands"]
        self.command_delay = p["command_time_from_start"]

        self.state_pub = self.create_publisher(JointState, "~/joint_states", 10)
        self.command_pub = (
            self.create_publisher(JointTrajectory, "joint_commands", 10) if self.mirror else None
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
        point = JointTrajectoryPoint(
            positions=[float(positions[n]) for n in self.joint_names],
            time_from_start=duration_msg(self.command_delay),
        )
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
