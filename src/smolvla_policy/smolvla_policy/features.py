"""LeRobot's feature names: the keys a SmolVLA checkpoint uses for its state, actions and images."""

from __future__ import annotations

STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_KEY_PREFIX = "observation.images."
EMPTY_CAMERA_PREFIX = IMAGE_KEY_PREFIX + "empty_camera_"


def image_key(camera_or_key: str) -> str:
    """``top`` -> ``observation.images.top``; a full key (``observation.images.top``) is kept."""
    return camera_or_key if camera_or_key.startswith("observation.") else IMAGE_KEY_PREFIX + camera_or_key
