"""`ros2 launch smolvla_bringup robot.launch.py`: the nodes of `smolvla-run robot`."""

from smolvla_bringup.launch_support import describe


def generate_launch_description():
    return describe("robot")
