"""ROS-free control of an SO-100/SO-101 arm on its Feetech bus.

- :mod:`~so100_driver.arm.joint`: a joint and its calibration;
- :mod:`~so100_driver.arm.safety`: protection thresholds and the goal rule (:func:`next_goal`);
- :mod:`~so100_driver.arm.commands`: command validation, trajectories, the targets an arm holds;
- :mod:`~so100_driver.arm.link`: the bus connection shared by follower and leader (checks, reads,
  reconnection, diagnostics);
- :mod:`~so100_driver.arm.follower`: the follower (torque, protection, goals);
- :mod:`~so100_driver.arm.leader`: the leader (torque off, read only).
"""

from so100_driver.arm.commands import CommandError, JointTargets, TrajectoryPlan, validate_command
from so100_driver.arm.follower import ArmController
from so100_driver.arm.joint import Joint
from so100_driver.arm.leader import LeaderArm
from so100_driver.arm.link import ArmLink, ArmState, CycleResult, StatusReport
from so100_driver.arm.safety import SafetyConfig, next_goal

__all__ = [
    "ArmController",
    "ArmLink",
    "ArmState",
    "CommandError",
    "CycleResult",
    "Joint",
    "JointTargets",
    "LeaderArm",
    "SafetyConfig",
    "StatusReport",
    "TrajectoryPlan",
    "next_goal",
    "validate_command",
]
