"""`ros2 launch smolvla_bringup policy.launch.py`: the nodes of `smolvla-run policy`."""

from smolvla_bringup.launch_support import describe


def generate_launch_description():
    return describe("policy")
