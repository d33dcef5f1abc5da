"""The embodiment both arms present: end-effector deltas bounded per step by their safety limits."""
from __future__ import annotations

from robot.safety import SafetyLimits
from robot.types import EmbodimentSpec

# proprio layout of both drivers: fingertip pose in the base frame, then gripper openness (1 = open)
PROPRIO_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")


def delta_pose_spec(name: str, control_hz: float, safety: SafetyLimits, cameras) -> EmbodimentSpec:
    """EmbodimentSpec for [dx, dy, dz, droll, dpitch, dyaw, gripper] actions within `safety`'s step bounds."""
    t, r = safety.max_translation, safety.max_rotation
    return EmbodimentSpec(
        name=name,
        control_hz=control_hz,
        action_low=(-t, -t, -t, -r, -r, -r, safety.gripper_range[0]),
        action_high=(t, t, t, r, r, r, safety.gripper_range[1]),
        cameras=tuple(c.spec() for c in cameras),
        proprio_names=PROPRIO_NAMES,
    )
