"""`ros2 launch smolvla_bringup real.launch.py`: the nodes of `smolvla-run real`."""

from smolvla_bringup.launch_support import describe


def generate_launch_description():
    return describe("real")
