"""The node graphs the suite starts, shared by the launch files and the single-process runner.

Both ways to run read this one description, so ``ros2 launch smolvla_bringup sim.launch.py`` and
``smolvla-run sim`` start the same nodes, with the same names and the same YAML parameter files. Nothing
here imports rclpy or launch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NodeSpec:
    """One node of a graph: where its executable lives and which class implements it."""

    package: str
    executable: str
    name: str  # node name: the key of its section in the YAML parameter files
    node_class: str  # "module:Class", for the single-process runner

    def load_class(self) -> type:
        import importlib

        module, cls = self.node_class.split(":")
        return getattr(importlib.import_module(module), cls)


ARM = NodeSpec("so100_driver", "arm_node", "arm", "so100_driver.arm_node:ArmNode")
LEADER = NodeSpec("so100_driver", "leader_node", "leader", "so100_driver.leader_node:LeaderNode")
SIM = NodeSpec(
    "so100_driver", "sim_node", "arm", "so100_driver.sim_node:SimArmNode"
)  # same name: /arm/torque
POLICY = NodeSpec("smolvla_policy", "policy_node", "policy", "smolvla_policy.policy_node:PolicyNode")
EXECUTOR = NodeSpec(
    "smolvla_common", "executor_node", "executor", "smolvla_common.executor_node:ExecutorNode"
)
VISUALIZER = NodeSpec(
    "smolvla_bringup",
    "chunk_visualizer_node",
    "chunk_visualizer",
    "smolvla_bringup.chunk_visualizer_node:ChunkVisualizerNode",
)  # RViz markers of the measured arm and the predicted chunk


def camera(name: str) -> NodeSpec:
    return NodeSpec("so100_driver", "camera_node", f"camera_{name}", "so100_driver.camera_node:CameraNode")


DEFAULT_CAMERAS = ("top", "wrist")
SIM_CAMERAS = ("top", "wrist", "front", "side")  # sim camera given to a checkpoint's 1st, 2nd, ... image
IMAGE_PREFIX = "observation.images."
EMPTY_CAMERA_PREFIX = IMAGE_PREFIX + "empty_camera_"  # LeRobot's placeholder images: the policy fills them

# graph name -> parameter files (in config/, later files override earlier ones: the shared policy and
# executor defaults first, the graph's own file last) and nodes.
GRAPHS: dict[str, tuple[tuple[str, ...], tuple[NodeSpec, ...]]] = {
    "sim": (
        ("policy.yaml", "executor.yaml", "visualizer.yaml", "sim.yaml"),
        (SIM, POLICY, EXECUTOR, VISUALIZER),
    ),
    "real": (
        ("policy.yaml", "executor.yaml", "visualizer.yaml", "robot.yaml"),
        (*(camera(c) for c in DEFAULT_CAMERAS), ARM, POLICY, EXECUTOR, VISUALIZER),
    ),
    "robot": (("executor.yaml", "robot.yaml"), (*(camera(c) for c in DEFAULT_CAMERAS), ARM, EXECUTOR)),
    "policy": (("policy.yaml",), (POLICY,)),
}


@dataclass(frozen=True)
class Argument:
    """A launch argument / runner flag and the node parameters it sets (empty: keep the YAML value)."""

    name: str
    targets: tuple[tuple[NodeSpec, str], ...]  # (node, parameter name): only where that node is in the graph
    help: str
    type: type = str

    def convert(self, value: str):
        """The typed parameter value, so that e.g. fps=30 reaches a double parameter as 30.0."""
        if self.type is bool:
            if value.lower() not in ("true", "false"):
                raise ValueError(f"argument {self.name!r} must be true or false, got {value!r}")
            return value.lower() == "true"
        try:
            return self.type(value)
        except ValueError as err:
            raise ValueError(f"argument {self.name!r} must be a {self.type.__name__}, got {value!r}") from err


ARGUMENTS = {
    a.name: a
    for a in (
        Argument(
            "checkpoint", ((POLICY, "checkpoint"),), "SmolVLA checkpoint: LeRobot folder or hub repo id"
        ),
        Argument("device", ((POLICY, "device"),), "torch device of the policy: auto, cpu, cuda, cuda:1, ..."),
        Argument(
            "calibration_file",
            ((ARM, "calibration_file"), (POLICY, "calibration_file")),
            "LeRobot calibration JSON of the follower arm",
        ),
        Argument("port", ((ARM, "port"),), "serial port of the follower arm, e.g. /dev/ttyACM0"),
        *(
            Argument(
                f"{name}_camera",
                ((camera(name), "source"),),
                f"{name} camera: /dev/videoN, /dev/v4l/by-id/..., a video file or an image folder",
            )
            for name in DEFAULT_CAMERAS
        ),
        Argument(
            "camera_fps",
            ((SIM, "camera_fps"), *((camera(c), "fps") for c in DEFAULT_CAMERAS)),
            "camera frame rate (Hz)",
            float,
        ),
        Argument("fps", ((EXECUTOR, "rate_hz"),), "control rate of the executor (Hz)", float),
        Argument("mode", ((EXECUTOR, "mode"),), "executor mode: async (default) or sync"),
        Argument("task", ((POLICY, "task"),), "default instruction until one arrives on instruction"),
    )
}


def arguments_for(nodes: tuple[NodeSpec, ...]) -> list[Argument]:
    """The arguments that set a parameter of at least one of ``nodes`` (what a graph's launch file offers)."""
    return [a for a in ARGUMENTS.values() if any(spec in nodes for spec, _ in a.targets)]


def check_namespace(namespace: str) -> str:
    """A namespace for a whole graph ('' for the root), as ``/name``; ValueError when ROS would refuse it."""
    namespace = namespace.strip()
    if not namespace:
        return ""
    parts = namespace.strip("/").split("/")
    if not all(
        p and (p[0].isalpha() or p[0] == "_") and all(c.isalnum() or c == "_" for c in p) for p in parts
    ):
        raise ValueError(
            f"namespace {namespace!r}: expected names of letters, digits and underscores, not starting "
            "with a digit, separated by '/' (e.g. left or robots/left)"
        )
    return "/" + "/".join(parts)


def config_dir() -> Path:
    """The YAML parameter files: the installed share/ folder, or the source tree as a fallback."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return Path(get_package_share_directory("smolvla_bringup")) / "config"
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    return Path(__file__).resolve().parents[1] / "config"


def graph(name: str) -> tuple[list[Path], tuple[NodeSpec, ...]]:
    """Parameter files and nodes of a graph; a clear error for an unknown name."""
    if name not in GRAPHS:
        raise ValueError(f"unknown graph {name!r}; choose one of {sorted(GRAPHS)}")
    files, nodes = GRAPHS[name]
    return [config_dir() / f for f in files], nodes


def overrides(values: dict[str, str], nodes: tuple[NodeSpec, ...] | None = None) -> dict[str, dict]:
    """Argument values -> {node name: {parameter: typed value}}, skipping empty values.

    With ``nodes`` (a graph), only targets whose node is in it are set, and a value given for an argument
    that no node of the graph uses is an error (e.g. ``port`` for the simulation).
    """
    result: dict[str, dict] = {}
    for name, value in values.items():
        if name not in ARGUMENTS:
            raise ValueError(f"unknown argument {name!r}; known: {sorted(ARGUMENTS)}")
        if value == "":
            continue
        targets = [(spec, param) for spec, param in ARGUMENTS[name].targets if nodes is None or spec in nodes]
        if not targets:
            names = ", ".join(spec.name for spec in nodes or ())
            raise ValueError(f"argument {name!r} does not apply to this graph (its nodes: {names})")
        for spec, param in targets:
            result.setdefault(spec.name, {})[param] = ARGUMENTS[name].convert(value)
    return result


def camera_entries(image_keys: list[str]) -> list[str]:
    """The policy's ``cameras`` entries for a checkpoint's image features, from the sim's cameras.

    Features named like sim cameras use them (``front``, ``wrist``); otherwise the sim cameras are given in
    order to the checkpoint's images (smolvla_base: camera1 <- top, camera2 <- wrist, camera3 <- front).
    """
    names = [k.removeprefix(IMAGE_PREFIX) for k in image_keys]
    if all(n in SIM_CAMERAS for n in names):
        return names
    if len(names) > len(SIM_CAMERAS):
        raise ValueError(f"the checkpoint wants {len(names)} cameras; the simulation has {len(SIM_CAMERAS)}")
    return [f"{sim}:{key}" for sim, key in zip(SIM_CAMERAS, image_keys, strict=False)]


def checkpoint_images(checkpoint: str) -> dict[str, tuple[int, int, int]]:
    """The images (feature key -> (C, H, W), in config order) a local checkpoint folder's ``config.json``
    asks for; empty for a hub repo id or a folder this cannot read (the policy node then names the problem).

    Plain JSON, so that the runner and the launch files need neither the policy package nor torch.
    """
    if not checkpoint:
        return {}
    try:
        features = json.loads((Path(checkpoint).expanduser() / "config.json").read_text())["input_features"]
        return {
            key: tuple(int(size) for size in feature["shape"])
            for key, feature in features.items()
            if feature.get("type") == "VISUAL" and not key.startswith(EMPTY_CAMERA_PREFIX)
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def checkpoint_parameters(values: dict[str, str], nodes: tuple[NodeSpec, ...]) -> dict[str, dict]:
    """{node name: {parameter: value}} that fit the simulation to the argument ``checkpoint``: the cameras
    it was trained with, rendered at its image size, and the policy's map onto them.

    Empty unless the graph has the simulated arm and the checkpoint is a folder whose images the sim can
    render. These are defaults under the user's own parameter files (see :func:`parameter_file_text`).
    """
    images = checkpoint_images(values.get("checkpoint", "")) if SIM in nodes else {}
    if not images or len(images) > len(SIM_CAMERAS):
        return {}
    entries = camera_entries(list(images))
    _, height, width = next(iter(images.values()))
    policy: dict = {"cameras": entries}
    if len(set(images.values())) > 1:
        policy["image_resize"] = "resize"  # the sim renders every camera at one size
    sim = {"cameras": [e.split(":")[0] for e in entries], "camera_width": width, "camera_height": height}
    return {SIM.name: sim, POLICY.name: policy}


def parameter_file_text(per_node: dict[str, dict]) -> str:
    """A ROS parameter file setting these parameters of the named nodes in any namespace (JSON is YAML)."""
    return json.dumps({f"/**/{name}": {"ros__parameters": p} for name, p in per_node.items()}, indent=2)
