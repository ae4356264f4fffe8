"""A calibration file exactly as LeRobot 0.4.x writes it (the SO-101 follower preset of the emulator)."""

from __future__ import annotations

from pathlib import Path

# Exactly what LeRobot 0.4.x writes (json.dump of the asdict()s with indent=4, no trailing newline).
LEROBOT_FILE = """{
    "shoulder_pan": {
        "id": 1,
        "drive_mode": 0,
        "homing_offset": -38,
        "range_min": 742,
        "range_max": 3377
    },
    "shoulder_lift": {
        "id": 2,
        "drive_mode": 0,
        "homing_offset": 1124,
        "range_min": 830,
        "range_max": 3250
    },
    "elbow_flex": {
        "id": 3,
        "drive_mode": 0,
        "homing_offset": -977,
        "range_min": 853,
        "range_max": 3087
    },
    "wrist_flex": {
        "id": 4,
        "drive_mode": 0,
        "homing_offset": -612,
        "range_min": 871,
        "range_max": 3204
    },
    "wrist_roll": {
        "id": 5,
        "drive_mode": 0,
        "homing_offset": 307,
        "range_min": 0,
        "range_max": 4095
    },
    "gripper": {
        "id": 6,
        "drive_mode": 0,
        "homing_offset": 1389,
        "range_min": 2021,
        "range_max": 3463
    }
}"""


def write_lerobot_file(path: Path) -> Path:
    """Write :data:`LEROBOT_FILE` to ``path`` (parents created); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(LEROBOT_FILE.encode())
    return path
