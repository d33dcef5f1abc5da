"""WidowX 250 kinematics: forward against the MJCF the sim ships, inverse round trips, limits."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from hardware.errors import JointLimitError
from hardware.widowx import kinematics as k

MJCF = pathlib.Path(__file__).resolve().parents[2] / "sim" / "assets" / "widowx250" / "widowx250.xml"


@pytest.mark.skipif(not MJCF.is_file(), reason=f"{MJCF} (the sim's WidowX model) is absent")
def test_forward_matches_the_mujoco_model():
    mujoco = pytest.importorskip("mujoco")
    model = mujoco.MjModel.from_xml_path(str(MJCF))
    data = mujoco.MjData(model)
    site = model.site("widowx250/ee").id
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.uniform(k.LOWER, k.UPPER)
        for name, angle in zip(k.JOINTS, q):
            data.qpos[model.jnt_qposadr[model.joint(f"widowx250/{name}").id]] = angle
        mujoco.mj_kinematics(model, data)
        T = k.forward(q)
        np.testing.assert_allclose(T[:3, 3], data.site_xpos[site], atol=1e-9)
        np.testing.assert_allclose(T[:3, :3], data.site_xmat[site].reshape(3, 3), atol=1e-9)


def test_home_pose_is_the_published_one():
    np.testing.assert_allclose(k.forward(np.zeros(6))[:3, 3], [0.458325, 0.0, 0.36065])


def test_inverse_reaches_small_bridge_steps():
    rng = np.random.default_rng(1)
    q0 = np.array([0.0, -0.3, 0.5, 0.0, 1.3, 0.0])
    for _ in range(20):
        T = k.forward(q0)
        target = T.copy()
        target[:3, 3] += rng.uniform(-0.05, 0.05, 3)
        target[:3, :3] = k.euler_to_matrix(rng.uniform(-0.25, 0.25, 3)) @ T[:3, :3]
        result = k.inverse(target, q0)
        reached = k.forward(result.q)
        assert np.linalg.norm(reached[:3, 3] - target[:3, 3]) < k.IK_POSITION_TOL
        assert np.linalg.norm(k.rotation_log(reached[:3, :3] @ target[:3, :3].T)) < k.IK_ROTATION_TOL


def test_euler_round_trip():
    rpy = np.array([0.3, -0.7, 2.1])
    np.testing.assert_allclose(k.matrix_to_euler(k.euler_to_matrix(rpy)), rpy)


def test_unreachable_pose_is_refused_with_distance():
    target = k.forward(np.zeros(6))
    target[:3, 3] = [1.0, 0.0, 0.3]  # twice the arm's reach
    with pytest.raises(JointLimitError, match="out of the WidowX 250's reach"):
        k.inverse(target, np.zeros(6))


def test_limits_name_the_joint():
    q = np.zeros(6)
    q[2] = np.radians(100)  # elbow upper limit is 92 deg
    with pytest.raises(JointLimitError, match="elbow=100.0 deg"):
        k.check_limits(q)
