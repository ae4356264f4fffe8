"""`make demo`: the whole SmolVLA pipeline in simulation (see :mod:`smolvla_bringup.demo.run`)."""

from smolvla_bringup.demo.model import make_demo_checkpoint
from smolvla_bringup.demo.run import exit_now_if_inferring, main

__all__ = ["exit_now_if_inferring", "main", "make_demo_checkpoint"]
