"""Repair the build-machine paths baked into the ``ros-*`` wheels, inside one virtual environment.

The ROS 2 wheels on PyPI were built under ``/opt/python/cpXY-cpXY`` and their CMake export files and
ament index still point there (Python headers, NumPy headers, parent prefix paths). ``colcon build`` of
our message package needs them to point at this environment instead. Only files under the given venv
are touched; running it twice changes nothing the second time.

Usage: python scripts/fix_ros_wheel_paths.py [VENV]   (default: the running interpreter's prefix)
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

BUILD_ROOT = re.compile(r"/opt/python/cp\d+-cp\d+")


def replacements(venv: Path) -> list[tuple[re.Pattern[str], str]]:
    """Most specific first: headers, NumPy headers, site-packages, then the prefix itself."""
    import numpy

    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    root = BUILD_ROOT.pattern
    return [
        (re.compile(root + r"/include/python3\.\d+"), sysconfig.get_paths()["include"]),
        (re.compile(root + r"/lib/python3\.\d+/site-packages/numpy/_core/include"), numpy.get_include()),
        (re.compile(root + r"/lib/python3\.\d+/site-packages"), str(site)),
        (re.compile(root), str(venv)),
    ]


def candidate_files(venv: Path) -> list[Path]:
    """Text files the ROS tooling reads: CMake exports, the ament index, environment hooks."""
    suffixes = {".cmake", ".dsv", ".sh", ".bash", ".pc", ""}
    return [p for p in (venv / "share").rglob("*") if p.is_file() and p.suffix in suffixes]


def main() -> int:
    venv = Path(sys.argv[1] if len(sys.argv) > 1 else sys.prefix).resolve()
    if not (venv / "share").is_dir():
        print(f"fix_ros_wheel_paths: {venv}/share not found; is this the project's .venv?", file=sys.stderr)
        return 2
    rules = replacements(venv)
    changed = 0
    for path in candidate_files(venv):
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if not BUILD_ROOT.search(text):
            continue
        for pattern, value in rules:
            text = pattern.sub(value.replace("\\", "/"), text)
        path.write_text(text)
        changed += 1
    print(f"fix_ros_wheel_paths: repaired {changed} file(s) under {venv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
