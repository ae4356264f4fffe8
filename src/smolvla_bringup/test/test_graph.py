"""Every node, parameter and argument the YAML files, launch files and runner name exists and is declared.

The graphs are really started through :class:`~smolvla_bringup.runner.Runner` with the shipped YAML files
(the same files and node names the launch files use): the sim graph on MuJoCo, the real graph on the
servo-bus emulator (real ``scservo_sdk`` over a pseudo-terminal) with generated video files as cameras,
both with a tiny generated SmolVLA checkpoint. Then each YAML key and argument target is compared with
the parameters the running node declared, and the YAML values with the values the node holds.
"""

from __future__ import annotations

import importlib.metadata
import json
import math

import cv2
import numpy as np
import pytest
import yaml

from smolvla_bringup import graph
from smolvla_bringup.runner import Runner, ros_cli_args


def _yaml_sections(path) -> dict[str, dict]:
    data = yaml.safe_load(path.read_text()) or {}
    assert all("ros__parameters" in body for body in data.values()), (
        f"{path.name}: a section lacks ros__parameters"
    )
    assert all(node.startswith("/**/") for node in data), f"{path.name}: sections must be /**/<node>"
    return {node.removeprefix("/**/"): body["ros__parameters"] for node, body in data.items()}


def _same(a, b) -> bool:
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b))
    return a == b


def _write_video(path) -> str:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    for i in range(30):
        frame = np.full((48, 64, 3), 40 + 5 * i, np.uint8)
        writer.write(frame)
    writer.release()
    return str(path)


def _started(name: str, arguments: dict[str, str]):
    files, specs = graph.graph(name)
    runner = Runner(specs, files, graph.overrides(arguments, specs))
    runner.start()
    return runner, {node.get_name(): node for node in runner.nodes}


def _check_graph(name: str, nodes_by_spec: dict, arguments: dict[str, str], values: bool = True) -> list[str]:
    """Problems of one graph, each node checked by a running instance (``values``: started by this graph)."""
    problems = []
    files, specs = graph.graph(name)
    by_name = {spec.name: nodes_by_spec[spec] for spec in specs}
    assert len(by_name) == len(specs), f"{name}: node names are not unique"
    applied = graph.overrides(arguments, specs)
    for path in files:
        for node_name, params in _yaml_sections(path).items():
            if node_name not in by_name:
                continue  # a section for another graph that shares the file (e.g. policy in robot.yaml)
            node = by_name[node_name]
            for key, value in params.items():
                if not node.has_parameter(key):
                    problems.append(
                        f"{path.name}: {node_name}.{key} is not declared by {type(node).__name__}"
                    )
                    continue
                # A later file or an argument may override it; otherwise the node must hold the YAML value.
                later = [
                    p for p in files[files.index(path) + 1 :] if key in _yaml_sections(p).get(node_name, {})
                ]
                if values and not later and key not in applied.get(node_name, {}):
                    held = node.get_parameter(key).value
                    if not _same(held, value):
                        problems.append(
                            f"{path.name}: {node_name}.{key} = {value!r} but the node holds {held!r}"
                        )
    for argument in graph.ARGUMENTS.values():
        for spec, param in argument.targets:
            if spec in specs and not by_name[spec.name].has_parameter(param):
                problems.append(f"argument {argument.name}: {spec.name}.{param} is not declared")
    for node_name, params in applied.items():
        for key, value in params.items():
            if not _same(by_name[node_name].get_parameter(key).value, value):
                problems.append(f"argument value for {node_name}.{key} did not reach the node")
    return problems


def test_yaml_sections_name_nodes_of_the_graphs_that_read_them():
    for path in sorted(graph.config_dir().glob("*.yaml")):
        users = [name for name, (files, _) in graph.GRAPHS.items() if path.name in files]
        assert users, f"{path.name} is not read by any graph"
        known = {spec.name for name in users for spec in graph.GRAPHS[name][1]}
        unknown = set(_yaml_sections(path)) - known
        assert not unknown, f"{path.name}: sections {sorted(unknown)} name no node of {users}"


def test_every_argument_targets_a_node_of_some_graph():
    in_graphs = {spec for _, specs in graph.GRAPHS.values() for spec in specs}
    for argument in graph.ARGUMENTS.values():
        assert argument.targets and all(spec in in_graphs for spec, _ in argument.targets), argument.name


def test_launch_executables_run_the_runner_classes():
    """`ros2 launch` starts package/executable; it must be the entry point of the class the runner builds."""
    for _, specs in graph.GRAPHS.values():
        for spec in specs:
            scripts = {
                ep.name: ep.value
                for ep in importlib.metadata.distribution(spec.package).entry_points
                if ep.group == "console_scripts"
            }
            assert spec.executable in scripts, f"{spec.package} has no executable {spec.executable}"
            module = scripts[spec.executable].split(":")[0]
            assert module == spec.node_class.split(":")[0], (
                f"{spec.executable} runs {module}, not {spec.node_class}"
            )


def test_arguments_convert_and_refuse_clearly():
    assert graph.overrides({"fps": "30", "mode": "sync"}, graph.GRAPHS["sim"][1]) == {
        "executor": {"rate_hz": 30.0, "mode": "sync"}
    }
    with pytest.raises(ValueError, match="'fps' must be a float"):
        graph.overrides({"fps": "fast"})
    with pytest.raises(ValueError, match="'port' does not apply"):
        graph.overrides({"port": "/dev/ttyACM0"}, graph.GRAPHS["sim"][1])
    with pytest.raises(ValueError, match="unknown argument"):
        graph.overrides({"prot": "/dev/ttyACM0"})
    with pytest.raises(ValueError, match="unknown graph"):
        graph.graph("simulation")
    args = ros_cli_args(
        graph.EXECUTOR, [graph.config_dir() / "executor.yaml"], {"rate_hz": 30.0, "mode": "sync"}
    )
    assert args[:3] == ["--ros-args", "-r", "__node:=executor"]
    assert args[-4:] == ["-p", "rate_hz:=30.0", "-p", "mode:=sync"]


def test_camera_entries_map_sim_cameras_to_checkpoint_images():
    named = ["observation.images.front", "observation.images.wrist"]
    assert graph.camera_entries(named) == ["front", "wrist"]
    assert graph.camera_entries([f"observation.images.camera{i}" for i in (1, 2, 3)]) == [
        "top:observation.images.camera1",
        "wrist:observation.images.camera2",
        "front:observation.images.camera3",
    ]
    with pytest.raises(ValueError, match="5 cameras"):
        graph.camera_entries([f"observation.images.c{i}" for i in range(5)])


def test_the_sim_is_fitted_to_the_checkpoints_cameras(tiny_checkpoint_factory, tmp_path):
    """A front + wrist checkpoint (what `make train` records) gets those cameras rendered at its size; what
    the sim cannot fit, or a graph without the sim, gets nothing (the YAML files and the policy decide)."""
    checkpoint = str(tiny_checkpoint_factory(cameras=("front", "wrist"), image_shape=(3, 48, 64)))
    sim = graph.GRAPHS["sim"][1]
    fitted = graph.checkpoint_parameters({"checkpoint": checkpoint, "fps": "30"}, sim)
    assert fitted == {
        "arm": {"cameras": ["front", "wrist"], "camera_width": 64, "camera_height": 48},
        "policy": {"cameras": ["front", "wrist"]},
    }
    assert yaml.safe_load(graph.parameter_file_text(fitted)) == {
        "/**/arm": {"ros__parameters": fitted["arm"]},
        "/**/policy": {"ros__parameters": fitted["policy"]},
    }
    base_like = str(tiny_checkpoint_factory(cameras=("camera1", "camera2", "camera3")))
    assert graph.checkpoint_parameters({"checkpoint": base_like}, sim)["arm"]["cameras"] == [
        "top", "wrist", "front"
    ]  # fmt: skip
    for nothing_to_fit in (
        {"checkpoint": checkpoint, "graph": "real"},
        {"checkpoint": "lerobot/smolvla_base"},  # a hub id: the YAML files decide
        {"checkpoint": str(tmp_path / "missing")},
        {"checkpoint": _config_only(tmp_path / "five", {f"c{i}": (3, 48, 64) for i in range(5)})},
        {"checkpoint": ""},
    ):
        nodes = graph.GRAPHS[nothing_to_fit.pop("graph", "sim")][1]
        assert graph.checkpoint_parameters(nothing_to_fit, nodes) == {}, nothing_to_fit
    mixed = _config_only(tmp_path / "mixed", {"front": (3, 48, 64), "wrist": (3, 96, 128)})
    fitted = graph.checkpoint_parameters({"checkpoint": mixed}, sim)  # one size for all sim cameras
    assert fitted["arm"]["camera_width"] == 64 and fitted["policy"]["image_resize"] == "resize"


def _config_only(folder, images: dict[str, tuple[int, int, int]]) -> str:
    """A checkpoint folder with only its config.json (all the sim fitting reads)."""
    features = {f"observation.images.{k}": {"type": "VISUAL", "shape": list(v)} for k, v in images.items()}
    features["observation.state"] = {"type": "STATE", "shape": [6]}
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"type": "smolvla", "input_features": features}))
    return str(folder)


def test_sim_and_real_graph_parameters_are_declared(demo_checkpoint, tmp_path):
    from smolvla_common.calibration import ArmCalibration, MotorCalibration, save_calibration
    from so100_driver.emulator import BusEmulator
    from so100_driver.emulator.presets import preset_motors

    calibration = ArmCalibration(
        {
            m.name: MotorCalibration(m.motor_id, 0, m.homing_offset, m.range_min, m.range_max)
            for m in preset_motors("so101_follower")
        }
    )
    calibration_file = str(save_calibration(calibration, tmp_path / "follower.json"))
    video = _write_video(tmp_path / "camera.avi")
    nodes_by_spec: dict = {}
    problems: list[str] = []

    sim_args = {"checkpoint": str(demo_checkpoint), "fps": "25", "camera_fps": "10"}
    runner, nodes = _started("sim", sim_args)
    try:
        assert sorted(nodes) == ["arm", "chunk_visualizer", "executor", "policy"]
        for spec in graph.GRAPHS["sim"][1]:
            nodes_by_spec[spec] = nodes[spec.name]
        problems += _check_graph("sim", nodes_by_spec, sim_args)
    finally:
        runner.shutdown()

    with BusEmulator(preset="so101_follower", calibration=calibration_file) as emulator:
        real_args = {
            "checkpoint": str(demo_checkpoint),
            "port": emulator.port,
            "calibration_file": calibration_file,
            "top_camera": video,
            "wrist_camera": video,
            "mode": "sync",
        }
        runner, nodes = _started("real", real_args)
        try:
            assert sorted(nodes) == [
                "arm",
                "camera_top",
                "camera_wrist",
                "chunk_visualizer",
                "executor",
                "policy",
            ]
            for spec in graph.GRAPHS["real"][1]:
                nodes_by_spec[spec] = nodes[spec.name]
            problems += _check_graph("real", nodes_by_spec, real_args)
            robot_args = {k: v for k, v in real_args.items() if k != "checkpoint"}
            problems += _check_graph("robot", nodes_by_spec, robot_args, values=False)
            problems += _check_graph(
                "policy", nodes_by_spec, {"checkpoint": str(demo_checkpoint)}, values=False
            )
            assert nodes["camera_top"].get_parameter("name").value == "top"
        finally:
            runner.shutdown()
    assert not problems, "\n".join(problems)


def test_real_arm_without_calibration_file_says_what_to_set():
    """robot.yaml ships an empty calibration_file: starting the real graph must say what is missing."""
    files, specs = graph.graph("robot")
    runner = Runner([s for s in specs if s.name == "arm"], files)
    with pytest.raises(ValueError, match="calibration_file"):
        runner.start()
