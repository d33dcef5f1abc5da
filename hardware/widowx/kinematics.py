"""Forward and inverse kinematics of the WidowX 250 6-DoF (Interbotix `wx250s`), product of exponentials.

Source: Interbotix `interbotix_xs_modules` `mr_descriptions.py`, class `wx250s` (space-frame screw
axes `Slist` and home pose `M` of `ee_gripper_link`), which follows from the joint origins of
`interbotix_xsarm_descriptions/urdf/wx250s.urdf.xacro`: shoulder 0.11065 m above the base,
elbow 0.04975 m forward and 0.25 m up from it, wrist angle 0.25 m further forward, fingertip
centre 0.158575 m beyond the wrist angle. The MJCF in `sim/assets/widowx250/` is built from the
same URDF; a test checks that the two agree.

Joint angles are in radians, zero at the servo centre (2048 counts), positive as the URDF axes.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from hardware.errors import JointLimitError
from hardware.geometry import euler_to_matrix, matrix_to_euler, pose_to_vector, rotation_log

__all__ = ["JOINTS", "LOWER", "UPPER", "IKResult", "check_limits", "euler_to_matrix", "forward", "inverse",
           "matrix_to_euler", "pose_to_vector", "rotation_log", "space_jacobian"]

JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")

# Screw axes in the base frame, one column per joint: (w, v), v = -w x q.
SLIST = np.array([
    [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, -0.11065, 0.0, 0.0],
    [0.0, 1.0, 0.0, -0.36065, 0.0, 0.04975],
    [1.0, 0.0, 0.0, 0.0, 0.36065, 0.0],
    [0.0, 1.0, 0.0, -0.36065, 0.0, 0.29975],
    [1.0, 0.0, 0.0, 0.0, 0.36065, 0.0],
]).T
# Pose of the fingertip centre (ee_gripper_link) with every joint at zero.
M_HOME = np.array([
    [1.0, 0.0, 0.0, 0.458325],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.36065],
    [0.0, 0.0, 0.0, 1.0],
])
# Joint limits in radians, wx250s.urdf.xacro (the servo Min/Max Position Limits say the same).
LOWER = np.radians([-180.0, -108.0, -123.0, -180.0, -100.0, -180.0])
UPPER = np.radians([180.0, 114.0, 92.0, 180.0, 123.0, 180.0])

IK_POSITION_TOL = 1e-4  # metres: a solution closer than this is accepted
IK_ROTATION_TOL = 1e-3  # radians
IK_MAX_ITERATIONS = 200
IK_DAMPING = 1e-3  # Levenberg-Marquardt damping: keeps steps finite near singular poses
IK_ROTATION_WEIGHT = 0.2  # a radian of orientation error weighs like 0.2 m of position error
IK_STEP_LIMIT = 0.3  # radians per iteration, so the solver does not jump to another branch


def _skew(w: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])


def _exp6(screw: np.ndarray, theta: float) -> np.ndarray:
    """exp([S] theta) for a revolute screw axis with unit w."""
    w, v = screw[:3], screw[3:]
    W = _skew(w)
    R = np.eye(3) + np.sin(theta) * W + (1 - np.cos(theta)) * W @ W
    p = (np.eye(3) * theta + (1 - np.cos(theta)) * W + (theta - np.sin(theta)) * W @ W) @ v
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, p
    return T


def _adjoint(T: np.ndarray) -> np.ndarray:
    R, p = T[:3, :3], T[:3, 3]
    ad = np.zeros((6, 6))
    ad[:3, :3], ad[3:, 3:], ad[3:, :3] = R, R, _skew(p) @ R
    return ad


def forward(q: np.ndarray) -> np.ndarray:
    """4x4 pose of the fingertip centre in the base frame for joint angles `q` [6]."""
    q = np.asarray(q, dtype=np.float64)
    T = np.eye(4)
    for i in range(6):
        T = T @ _exp6(SLIST[:, i], q[i])
    return T @ M_HOME


def space_jacobian(q: np.ndarray) -> np.ndarray:
    """6x6 space Jacobian (rows: w, v) at `q`."""
    J = np.zeros((6, 6))
    T = np.eye(4)
    for i in range(6):
        J[:, i] = _adjoint(T) @ SLIST[:, i]
        T = T @ _exp6(SLIST[:, i], q[i])
    return J


def check_limits(q: np.ndarray) -> None:
    """Raise JointLimitError naming each joint of `q` outside the URDF limits."""
    q = np.asarray(q, dtype=np.float64)
    bad = [f"{JOINTS[i]}={np.degrees(q[i]):.1f} deg (limits {np.degrees(LOWER[i]):.0f}..{np.degrees(UPPER[i]):.0f})"
           for i in range(6) if not LOWER[i] <= q[i] <= UPPER[i]]
    if bad:
        raise JointLimitError(f"joint target outside the WidowX 250 limits: {', '.join(bad)}; nothing was sent")


@dataclasses.dataclass(frozen=True)
class IKResult:
    q: np.ndarray
    position_error: float  # metres
    rotation_error: float  # radians
    iterations: int


def inverse(target: np.ndarray, q_start: np.ndarray) -> IKResult:
    """Joint angles reaching 4x4 pose `target`, starting from `q_start` (damped least squares).

    Raises JointLimitError when the pose is out of reach or needs a joint beyond its limits.
    """
    q = np.asarray(q_start, dtype=np.float64).copy()
    weights = np.array([IK_ROTATION_WEIGHT] * 3 + [1.0] * 3)
    for it in range(IK_MAX_ITERATIONS):
        T = forward(q)
        w_err = rotation_log(target[:3, :3] @ T[:3, :3].T)  # space-frame rotation error
        p_err = target[:3, 3] - T[:3, 3]
        if np.linalg.norm(p_err) < IK_POSITION_TOL and np.linalg.norm(w_err) < IK_ROTATION_TOL:
            check_limits(q)
            return IKResult(q, float(np.linalg.norm(p_err)), float(np.linalg.norm(w_err)), it)
        # space twist that moves the current pose toward the target: w, v = p_dot - w x p
        twist = np.concatenate([w_err, p_err - np.cross(w_err, T[:3, 3])])
        J = space_jacobian(q) * weights[:, None]
        err = twist * weights
        dq = np.linalg.solve(J.T @ J + IK_DAMPING * np.eye(6), J.T @ err)
        scale = max(1.0, np.max(np.abs(dq)) / IK_STEP_LIMIT)
        q = q + dq / scale
    T = forward(q)
    p_err = float(np.linalg.norm(target[:3, 3] - T[:3, 3]))
    w_err = float(np.linalg.norm(rotation_log(target[:3, :3] @ T[:3, :3].T)))
    raise JointLimitError(
        f"pose {np.round(pose_to_vector(target), 4).tolist()} is out of the WidowX 250's reach "
        f"(closest: {p_err * 1000:.1f} mm, {np.degrees(w_err):.1f} deg away); nothing was sent")
