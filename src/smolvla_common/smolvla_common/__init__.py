"""Shared by both sides of the SmolVLA suite: executor, recorder, bags and the common rules."""
