"""The data path a closed loop depends on, guarded without training: camera image -> model tensor -> action.

An analytic stand-in for a trained policy (no weights) finds the red cube in the top camera's image exactly
as the model receives it (``images_to_model``: the checkpoint's resize, [-1, 1] channels first), maps its
pixel position to the table through the top camera's pinhole geometry, and answers "point at the cube":
``shoulder_pan`` towards it and ``shoulder_lift`` leaning by the reach (1 degree per cm beyond 10 cm), the
other joints held where the state says. Images come from the real MuJoCo scene with the cube placed by the
task (``so100_driver.sim.task``); the policy side never imports MuJoCo.

The first tests go through what the policy node runs per observation (the sim node's image message ->
``assemble_observation`` -> ``PolicyRuntime.infer`` -> chunk in radians, LeRobot degree units in between);
the last one runs the real nodes over DDS: the sim node publishes, the policy node answers a request. The
mutations (flipped, mirrored, transposed, BGR-labelled image; joints named in the wrong order) must each
make the check fail: a closed loop trained on data recorded with such a fault would point elsewhere.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.time import Time
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

import so100_driver.sim  # noqa: F401  (selects the headless GL backend before mujoco is imported)
from smolvla_common.image_conversion import rgb_to_image_msg
from smolvla_common.joints import SO101_JOINTS
from smolvla_msgs.msg import ActionChunk, ChunkRequest
from smolvla_policy import policy_node
from smolvla_policy.model.preprocess import images_to_model
from smolvla_policy.runtime import CheckpointInfo, PolicyRuntime, RuntimeConfig
from smolvla_policy.runtime.observation import assemble_observation
from so100_driver.sim.arm import SimArm
from so100_driver.sim.render import FrameRenderer
from so100_driver.sim.scene import CAMERA_MOUNTS, SceneConfig, SimCamera, build_model
from so100_driver.sim.task import Placement, placements
from so100_driver.sim_node import SimArmNode

TOP_KEY = "observation.images.top"
SIZE = 256
MODEL_RESIZE = (512, 512)  # SmolVLA's resize_imgs_with_padding
AWAY = [1.9, -1.5, 1.5, 1.2, 0.3, 0.4]  # rad: the arm folded away to the back left, clear of the region
PLACEMENTS = [  # off the image centre in both axes, so that every flip moves the answer by centimetres
    Placement(0.29, 0.10, 0.3),
    Placement(0.19, -0.08, -0.5),
    Placement(0.27, -0.09, 0.1),
    Placement(0.18, 0.11, 0.7),
]
PAN_TOLERANCE_DEG, REACH_TOLERANCE_CM = 2.0, 1.2


class PointAtCube:
    """The analytic policy: ``predict_chunk`` interface, checkpoint units (degrees), one camera."""

    image_keys = (TOP_KEY,)
    state_dim = action_dim = len(SO101_JOINTS)
    chunk_size = 10

    def __init__(self, camera_xyz, fovy_deg: float, cube_top_z: float):
        self.camera_xyz = np.asarray(camera_xyz, float)
        self.tan_half = math.tan(math.radians(fovy_deg) / 2)
        self.depth = self.camera_xyz[2] - cube_top_z
        self.seen: list[tuple[float, float]] = []  # the table positions found, for the test's messages

    def cube_on_table(self, pixels) -> tuple[float, float]:
        """Pixel centroid of the red blob in the model's (1, 3, h, w) [-1, 1] tensor -> table (x, y), m."""
        r, g, b = ((pixels[0] + 1.0) / 2.0).numpy()
        rows, cols = np.nonzero((r > 0.35) & (g < 0.5 * r) & (b < 0.5 * r))
        if len(rows) < 20:
            raise ValueError("no red cube in the top image")
        height, width = r.shape
        focal = (height / 2) / self.tan_half  # square image: no padding, same field of view
        up = (height / 2 - (rows.mean() + 0.5)) * self.depth / focal  # image up = +x of the base
        right = ((cols.mean() + 0.5) - width / 2) * self.depth / focal  # image right = -y
        return float(self.camera_xyz[0] + up), float(self.camera_xyz[1] - right)

    def predict_chunk(self, images, state, task, **_kwargs) -> np.ndarray:
        pixels = images_to_model([images[TOP_KEY]], MODEL_RESIZE, torch_cpu())
        x, y = self.cube_on_table(pixels)
        self.seen.append((x, y))
        action = np.asarray(state, dtype=float).copy()
        action[0] = math.degrees(math.atan2(y, x))
        action[1] = 100.0 * (math.hypot(x, y) - 0.10)
        return np.tile(action, (self.chunk_size, 1))


def torch_cpu():
    import torch

    return torch.device("cpu")


def expected_pan_lift_deg(placement: Placement) -> tuple[float, float]:
    return math.degrees(math.atan2(placement.y, placement.x)), 100.0 * (
        math.hypot(placement.x, placement.y) - 0.10
    )


def policy_runtime(joint_names=SO101_JOINTS) -> PolicyRuntime:
    mount = CAMERA_MOUNTS["top"]
    info = CheckpointInfo({TOP_KEY: (3, SIZE, SIZE)}, 6, 6, PointAtCube.chunk_size, fps=30.0)
    config = RuntimeConfig(
        cameras=["top"], joint_names=list(joint_names), joint_units=["deg"] * 6, units_check="off"
    )
    return PolicyRuntime(info, config, model=PointAtCube(mount.position, mount.fovy_deg, 0.03))


@pytest.fixture(scope="module")
def top_images():
    """The top camera's frame for each placement, the arm folded away (real MuJoCo rendering)."""
    camera = SimCamera("top", SIZE, SIZE)
    model = build_model(SceneConfig(cameras=(camera,)))
    arm = SimArm(model, initial_positions=np.array(AWAY))
    renderer = FrameRenderer(model, camera)
    try:
        images = []
        for placement in PLACEMENTS:
            arm.place_cube(placement.x, placement.y, placement.yaw)
            images.append(renderer.render(arm.state().qpos))
        return images
    finally:
        renderer.close()


def point_errors(runtime: PolicyRuntime, image_msg, joint_msg, placement: Placement) -> list[str]:
    """What is wrong with the chunk for this observation ([] = it points at the cube, joints held)."""
    observation, reason = assemble_observation(joint_msg, {"top": image_msg}, "pick", {"top": "top"})
    if observation is None:
        return [f"refused: {reason}"]
    result = runtime.infer(observation, now=observation.stamp)
    if not result.ok:
        return [f"refused: {result.refusal}"]
    chunk = dict(zip(result.chunk.joint_names, result.chunk.positions[0], strict=True))
    pan, lift = expected_pan_lift_deg(placement)
    errors = []
    if abs(math.degrees(chunk["shoulder_pan"]) - pan) > PAN_TOLERANCE_DEG:
        errors.append(f"pan {math.degrees(chunk['shoulder_pan']):.1f} deg, cube at {pan:.1f}")
    if abs(math.degrees(chunk["shoulder_lift"]) - lift) > REACH_TOLERANCE_CM:
        errors.append(f"reach {math.degrees(chunk['shoulder_lift']):.1f}, cube at {lift:.1f}")
    held = {name: AWAY[i] for i, name in enumerate(SO101_JOINTS) if i >= 2}
    errors += [f"{n} {chunk[n]:.3f} != {v}" for n, v in held.items() if abs(chunk[n] - v) > 1e-6]
    return errors


def joint_state(names=SO101_JOINTS, positions=AWAY, stamp=None) -> JointState:
    msg = JointState(name=list(names), position=[float(p) for p in positions])
    msg.header.stamp = stamp or Time(seconds=100).to_msg()
    return msg


def image(rgb: np.ndarray, encoding: str = "rgb8"):
    msg = rgb_to_image_msg(np.ascontiguousarray(rgb), joint_state().header.stamp, "top_optical_frame")
    msg.encoding = encoding
    return msg


def test_the_policy_path_points_at_the_cube_for_each_placement(top_images):
    runtime = policy_runtime()
    shuffled = [3, 0, 5, 1, 4, 2]  # joint_states in any order: matched by name
    names, positions = [SO101_JOINTS[i] for i in shuffled], [AWAY[i] for i in shuffled]
    for placement, rgb in zip(PLACEMENTS, top_images, strict=True):
        errors = point_errors(runtime, image(rgb), joint_state(names, positions), placement)
        assert not errors, f"{placement}: {errors} (cube seen at {runtime.model.seen[-1:]})"


MUTATIONS = {
    "upside down": lambda rgb: (image(rgb[::-1]), joint_state()),
    "mirrored": lambda rgb: (image(rgb[:, ::-1]), joint_state()),
    "transposed": lambda rgb: (image(rgb.transpose(1, 0, 2)), joint_state()),
    "BGR labelled RGB": lambda rgb: (image(rgb[:, :, ::-1]), joint_state()),
    "RGB labelled BGR": lambda rgb: (image(rgb, "bgr8"), joint_state()),
    "positions in the wrong joint order": lambda rgb: (image(rgb), joint_state(positions=AWAY[::-1])),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_each_fault_of_the_data_path_is_caught(top_images, mutation):
    runtime = policy_runtime()
    caught = [
        point_errors(runtime, *MUTATIONS[mutation](rgb), placement)
        for placement, rgb in zip(PLACEMENTS, top_images, strict=True)
    ]
    missed = [p for p, errors in zip(PLACEMENTS, caught, strict=True) if not errors]
    assert not missed, f"{mutation}: not caught for {missed}"


def test_a_policy_configured_with_the_joints_swapped_is_caught(top_images):
    swapped = ["shoulder_lift", "shoulder_pan", *SO101_JOINTS[2:]]
    runtime = policy_runtime(swapped)
    assert point_errors(runtime, image(top_images[0]), joint_state(), PLACEMENTS[0])


class Requester(Node):
    """Asks the policy for chunks (as the executor does) and keeps them; calls the sim's episode reset."""

    def __init__(self, context):
        super().__init__("requester", context=context)
        self.chunks: list[ActionChunk] = []
        self.create_subscription(ActionChunk, "/smolvla/action_chunk", self.chunks.append, 10)
        self.requests = self.create_publisher(ChunkRequest, "/smolvla/request", 10)
        self.reset = self.create_client(Trigger, "/arm/reset_episode")

    def chunk(self, request_id: int, timeout: float = 10.0) -> ActionChunk:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = ChunkRequest(request_id=request_id, must_go=True)
            msg.header.stamp = self.get_clock().now().to_msg()
            self.requests.publish(msg)
            for _ in range(20):
                found = [c for c in self.chunks if c.request_id == request_id]
                if found:
                    return found[0]
                time.sleep(0.025)
        raise AssertionError(f"no chunk for request {request_id} within {timeout} s")


def test_the_real_nodes_point_at_the_cube_of_each_episode(monkeypatch):
    """sim_node (MuJoCo, seeded episodes) -> DDS -> policy_node (analytic model) -> ActionChunk."""
    runtime = policy_runtime()
    monkeypatch.setattr(policy_node.CheckpointInfo, "from_checkpoint", lambda _path: runtime.info)
    monkeypatch.setattr(
        policy_node.PolicyRuntime, "load_model", lambda self, *_a, **_k: self.attach_model(runtime.model)
    )
    context = rclpy.Context()
    rclpy.init(context=context)
    sim_params = {
        "cameras": ["top"],
        "camera_width": SIZE,
        "camera_height": SIZE,
        "camera_fps": 10.0,
        "initial_positions": AWAY,
        "task_seed": 11,
    }
    policy_params = {
        "checkpoint": "analytic",
        "cameras": ["top"],
        "joint_units": ["deg"] * 6,
        "units_check": "off",
        "warmup": False,
        "task": "point at the cube",
    }
    nodes = [
        SimArmNode(
            context=context, parameter_overrides=[Parameter(k, value=v) for k, v in sim_params.items()]
        ),
        policy_node.PolicyNode(
            context=context, parameter_overrides=[Parameter(k, value=v) for k, v in policy_params.items()]
        ),
        Requester(context),
    ]
    executor = SingleThreadedExecutor(context=context)
    for node in nodes:
        executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        requester = nodes[2]
        for episode, placement in enumerate(placements(11, 2), start=1):
            if episode > 1:
                assert requester.reset.wait_for_service(timeout_sec=5.0)
                future = requester.reset.call_async(Trigger.Request())
                deadline = time.monotonic() + 5.0
                while not future.done() and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert future.result().success, future.result()
                time.sleep(0.5)  # a frame rendered after the reset
            chunk = requester.chunk(request_id=episode)
            names = list(chunk.trajectory.joint_names)
            first = chunk.trajectory.points[0].positions
            pan, lift = expected_pan_lift_deg(placement)
            got_pan = math.degrees(first[names.index("shoulder_pan")])
            got_lift = math.degrees(first[names.index("shoulder_lift")])
            assert abs(got_pan - pan) < PAN_TOLERANCE_DEG, (episode, placement, got_pan, pan)
            assert abs(got_lift - lift) < REACH_TOLERANCE_CM, (episode, placement, got_lift, lift)
            held = {n: first[names.index(n)] - AWAY[i] for i, n in enumerate(SO101_JOINTS) if i >= 2}
            assert all(abs(d) < 0.1 for d in held.values()), f"joints not held where they are: {held}"
    finally:
        executor.shutdown(timeout_sec=5.0)
        spinner.join(timeout=5.0)
        for node in nodes:
            node.destroy_node()
        rclpy.shutdown(context=context)
