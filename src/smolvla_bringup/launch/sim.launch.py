"""`ros2 launch smolvla_bringup sim.launch.py`: the nodes of `smolvla-run sim`."""

from smolvla_bringup.launch_support import describe


def generate_launch_description():
    return describe("sim")
