"""Each launch file loads and describes exactly the runner's graph (needs `launch` and `launch_ros`).

Skipped where those packages are absent (the ROS 2 wheels from PyPI do not ship them); on a full ROS 2
install it imports every ``launch/*.launch.py``, evaluates its description with argument values and checks
the nodes (package, executable, name, parameter files and overrides) against :mod:`smolvla_bringup.graph`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from smolvla_bringup import graph

LAUNCH_DIR = Path(__file__).resolve().parents[1] / "launch"
GRAPH_OF = {f"{name}.launch.py": name for name in graph.GRAPHS}


def test_there_is_one_launch_file_per_graph():
    assert sorted(p.name for p in LAUNCH_DIR.glob("*.launch.py")) == sorted(GRAPH_OF)


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("filename", sorted(GRAPH_OF))
def test_launch_file_describes_the_graph(filename, tiny_checkpoint_factory):
    for package in ("launch", "launch_ros", "composition_interfaces"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(
                f"`{package}` is not installed: `make setup` installs the launch system from "
                "../shared/ros2-cli when that folder exists; a full ROS 2 install has it"
            )
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch_ros.actions import Node
    from launch_ros.utilities import evaluate_parameters

    name = GRAPH_OF[filename]
    description = _load(LAUNCH_DIR / filename).generate_launch_description()
    declared = {a.name for a in description.entities if isinstance(a, DeclareLaunchArgument)}
    files, specs = graph.graph(name)
    applicable = {a.name for a in graph.arguments_for(specs)}
    assert declared == {*applicable, "params", "namespace"}
    assert ("port" in declared) == (name in ("real", "robot")) and ("checkpoint" in declared) == (
        name != "robot"
    )

    checkpoint = str(tiny_checkpoint_factory(cameras=("front", "wrist")))  # the sim is fitted to these
    candidates = {"checkpoint": checkpoint, "fps": "25", "mode": "sync", "port": "/dev/ttyUSB7"}
    values = {k: v for k, v in candidates.items() if k in applicable} | {"params": "/extra.yaml"}
    context = LaunchContext()
    for argument in description.entities:
        if isinstance(argument, DeclareLaunchArgument):
            context.launch_configurations[argument.name] = values.get(argument.name, "")
    nodes = []
    for action in description.entities:
        if isinstance(action, OpaqueFunction):
            nodes += [n for n in action.execute(context) or [] if isinstance(n, Node)]
    assert [(n.node_package, n.node_executable) for n in nodes] == [(s.package, s.executable) for s in specs]
    arguments = {k: v for k, v in values.items() if k != "params"}
    expected = graph.overrides(arguments, specs)
    fitted = graph.checkpoint_parameters(arguments, specs)
    assert bool(fitted) == (name == "sim")
    for node, spec in zip(nodes, specs, strict=True):
        assert node._Node__node_name == spec.name  # launch_ros keeps the name as given until it runs
        parameters = evaluate_parameters(context, node._Node__parameters)
        assert [str(p) for p in parameters[: len(files)]] == [str(f) for f in files]
        # the sim fitted to the checkpoint: after the graph's files, under the user's file and arguments
        assert _plain(parameters[len(files)]) == fitted.get(spec.name, {})
        assert str(parameters[len(files) + 1]) == "/extra.yaml"
        assert _plain(parameters[-1]) == expected.get(spec.name, {})


def _plain(parameters) -> dict:
    """An evaluated launch_ros parameter dict as plain values (launch_ros turns lists into tuples)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in (parameters or {}).items()}


def test_robot_description_is_the_so101_with_resolvable_meshes():
    import xml.etree.ElementTree as ET

    from smolvla_bringup.robot_description import so101_urdf

    robot = ET.fromstring(so101_urdf())
    moving = {j.get("name") for j in robot.iter("joint") if j.get("type") == "revolute"}
    assert moving == {"shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"}
    meshes = [m.get("filename") for m in robot.iter("mesh")]
    assert meshes and all(m.startswith("file:///") for m in meshes)
    assert all(Path(m.removeprefix("file://")).is_file() for m in meshes)


def test_rviz_config_shows_the_chunk_markers_arm_and_cameras():
    import yaml

    from smolvla_bringup.kinematics import so101_model

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "rviz" / "smolvla.rviz").read_text())
    manager = config["Visualization Manager"]
    displays = {d["Name"]: d for d in manager["Displays"]}
    images = {d["Topic"]["Value"] for d in displays.values() if d["Class"] == "rviz_default_plugins/Image"}
    assert images == {"/cameras/top/image_raw", "/cameras/wrist/image_raw"}
    (markers,) = [d for d in displays.values() if d["Class"] == "rviz_default_plugins/MarkerArray"]
    # the visualizer's topics in the root namespace (RViz shows the graph started without --namespace)
    assert markers["Enabled"] and markers["Topic"]["Value"] == "/smolvla/chunk_markers"
    assert set(markers["Namespaces"]) == {"measured", "ghost", "tip_path", "tip_points"}
    (robot_model,) = [d for d in displays.values() if d["Class"] == "rviz_default_plugins/RobotModel"]
    assert robot_model["Description Topic"]["Value"] == "/robot_description"
    assert robot_model["TF Prefix"] == ""
    # the markers are in the URDF's root frame, so that is the fixed frame (no TF needed)
    assert manager["Global Options"]["Fixed Frame"] == so101_model().root
