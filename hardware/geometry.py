"""Rotations and poses shared by the arm drivers: axis-angle, roll-pitch-yaw, pose vectors."""
from __future__ import annotations

import numpy as np


def rotation_log(R: np.ndarray) -> np.ndarray:
    """Axis-angle vector w (|w| = angle) with exp([w]) = R."""
    cos = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    if np.pi - angle < 1e-6:  # near pi: take the axis from the largest diagonal entry
        k = int(np.argmax(np.diag(R)))
        axis = (R[:, k] + np.eye(3)[k]) / np.sqrt(2.0 * (1.0 + R[k, k]))
        return axis * angle
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2.0 * np.sin(angle))
    return axis * angle


def euler_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """Rotation matrix of extrinsic x-y-z (roll, pitch, yaw) angles: Rz(yaw) Ry(pitch) Rx(roll)."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def matrix_to_euler(R: np.ndarray) -> np.ndarray:
    """(roll, pitch, yaw) with R = Rz(yaw) Ry(pitch) Rx(roll)."""
    pitch = np.arcsin(np.clip(-R[2, 0], -1.0, 1.0))
    roll = np.arctan2(R[2, 1], R[2, 2])
    yaw = np.arctan2(R[1, 0], R[0, 0])
    return np.array([roll, pitch, yaw])


def pose_to_vector(T: np.ndarray) -> np.ndarray:
    """[x, y, z, roll, pitch, yaw] of a 4x4 pose."""
    return np.concatenate([T[:3, 3], matrix_to_euler(T[:3, :3])])
