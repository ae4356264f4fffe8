"""Repository hygiene: what a fresh clone must look like for the README's commands to be true."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
# Paths that only exist on some developer's machine or on the machine the ROS wheels were built on.
MACHINE_PATH = re.compile(r"(?<![\w.])(/work/|/root/|/home/[a-z]|/opt/python/|/Users/[A-Za-z])")


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: cannot list tracked files")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [REPO / name for name in out.decode().split("\0") if name]


def test_no_machine_specific_paths_in_tracked_files():
    offenders = []
    for path in tracked_files():
        if not path.is_file() or path.suffix in {".png", ".jpg", ".safetensors", ".mp4"}:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            # The wheel-path repair script must name the build root it repairs; it holds no other path.
            if path.name == "fix_ros_wheel_paths.py" and "/opt/python/cp" in line and "/work" not in line:
                continue
            if path.name == "test_repository.py":
                continue
            if MACHINE_PATH.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert not offenders, "machine-specific paths in the repository:\n" + "\n".join(offenders)


def test_generated_files_are_ignored():
    ignored = (REPO / ".gitignore").read_text().split()
    for distro_suffix in ("", "-kilted"):  # one workspace per ROS 2 distribution (scripts/workspace.sh)
        for entry in ("/.venv", "/build", "/install", "/log"):
            assert f"{entry}{distro_suffix}/" in ignored, f".gitignore must ignore {entry}{distro_suffix}/"
    assert "__pycache__/" in ignored


def test_make_clean_removes_build_products_only():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry_run = subprocess.run(["make", "-n", "clean"], cwd=REPO, capture_output=True, text=True, check=True)
    removed = dry_run.stdout.split()
    for product in ("build", "install", "log", "build-kilted", "install-kilted", "log-kilted"):
        assert product in removed
    assert not {"reports", ".venv", ".venv-kilted"} & set(removed), "make clean must keep reports and venvs"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.startswith("#")]
    for command in ("make test", "ROS_DISTRO=kilted make test"):  # both distributions
        assert f"`{command}`" in readme, f"the README must give `{command}` as a test command"
        assert command in commands, f".ci/run must run exactly the README's test command {command!r}"


def test_every_package_has_readme_manifest_and_marker():
    for pkg in ("so100_driver", "smolvla_policy", "smolvla_bringup"):
        root = REPO / "src" / pkg
        assert (root / "package.xml").is_file()
        assert (root / "README.md").is_file()
        assert (root / "resource" / pkg).is_file(), f"{pkg} lacks its ament resource marker"
        assert f"$base/lib/{pkg}" in (root / "setup.cfg").read_text(), "executables must go to lib/<pkg>"
    assert (REPO / "src" / "smolvla_msgs" / "README.md").is_file()
