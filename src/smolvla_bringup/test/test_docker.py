"""The Docker files, checked without a Docker engine (none on the development machines or in CI).

hadolint (pinned in requirements/dev.txt) lints both Dockerfiles with the repository's `.hadolint.yaml`; the
other tests check what a linter cannot: that the images and the compose file point at files that exist and
take their versions from `requirements/` (one source of truth), and that the robot image stays torch-free.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))
LAUNCH_DIR = REPO / "src" / "smolvla_bringup" / "launch"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).is_file():
        pytest.fail("hadolint is missing: `make setup` installs it from requirements/dev.txt")
    return found


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def test_both_images_exist():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.policy", "Dockerfile.robot"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path):
    result = subprocess.run(
        [hadolint(), "--config", str(REPO / ".hadolint.yaml"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path):
    """The lint step can fail: an unpinned `pip install` and a `cd` are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:24.04\nRUN cd /tmp && pip install requests\n")
    result = subprocess.run(
        [hadolint(), "--config", str(REPO / ".hadolint.yaml"), "--no-color", str(bad)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "DL3013" in result.stdout and "DL3003" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copied_files_exist_and_versions_come_from_requirements(dockerfile: Path):
    steps = instructions(dockerfile)
    for word, args in steps:
        if word == "COPY":
            *sources, _ = args.split()
            for source in sources:
                assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
        if word == "RUN":
            for requirement in re.findall(r"requirements/[\w.-]+\.txt", args):
                assert (REPO / requirement).is_file(), f"{dockerfile.name}: {requirement} does not exist"
            # Pins live in requirements/ only: a `pip install pkg==x` here would be a second source.
            assert not re.search(r"pip install[^&|;]*\b[\w.-]+==", args), f"{dockerfile.name}: pin in RUN"
    base = [args for word, args in steps if word == "ARG" and args.startswith("BASE_IMAGE=")]
    assert base and ":" in base[0], f"{dockerfile.name}: the base image must be a pinned ARG BASE_IMAGE"


def test_robot_image_stays_free_of_torch_and_the_policy_image_of_the_servo_sdk():
    """What each image installs is checked against what its programs import in test_architecture.py;
    here the plain reading of the files: no policy side in the robot image, no robot side in the other."""
    robot = (DOCKER / "Dockerfile.robot").read_text()
    policy = (DOCKER / "Dockerfile.policy").read_text()
    assert "policy.txt" not in robot and "src/smolvla_policy" not in robot and "COPY src/ " not in robot
    assert "robot.txt" not in policy and "src/so100_driver" not in policy and "COPY src/ " not in policy
    for side, text in (("robot", robot), ("policy", policy)):
        assert "sim.txt" not in text and "nodeps.txt" not in text, (
            f"{side}: MuJoCo is for development machines"
        )
    pins = (REPO / "requirements" / "robot.txt").read_text() + (
        REPO / "requirements" / "common.txt"
    ).read_text()
    assert not re.search(r"^(torch|transformers|mujoco)\b", pins, re.MULTILINE)


def test_compose_services_point_at_real_files():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"robot", "policy"}
    for name, service in services.items():
        build = service["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == REPO, f"{name}: build context must be the repository root"
        assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} missing"
        assert service["network_mode"] == "host", f"{name}: DDS discovery across hosts needs host networking"
        command = service["command"]
        assert command[:3] == ["ros2", "launch", "smolvla_bringup"], command
        assert (LAUNCH_DIR / command[3]).is_file(), f"{name}: launch file {command[3]} missing"
        assert any(str(e).startswith("ROS_DOMAIN_ID=") for e in service["environment"]), name
    assert services["policy"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_docker_readme_documents_every_compose_variable():
    variables = set(re.findall(r"\$\{(\w+)", (DOCKER / "compose.yaml").read_text()))
    readme = (DOCKER / "README.md").read_text()
    assert variables, "compose.yaml uses no variables?"
    for variable in variables:
        assert f"`{variable}`" in readme, f"docker/README.md does not document {variable}"
