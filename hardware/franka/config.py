"""Franka (FR3 / Panda) configuration: where the controller is, how hard it may push, its workspace.

The driver speaks libfranka's network protocol through `franky-control` (FR3, libfranka 0.15+
server version 10). A Panda with older system firmware needs a libfranka that matches it:
Panda owners install `panda-python` (its wheels bundle libfranka builds per firmware) and run
our loop through a driver on that library; `franky-control` refuses with a version error.
"""
from __future__ import annotations

import dataclasses
import enum
import math

from hardware.cameras import CameraConfig
from hardware.errors import ConfigError
from hardware.spec import delta_pose_spec
from robot.safety import SafetyLimits
from robot.types import EmbodimentSpec

ROBOT_PORT, GRIPPER_PORT = 1337, 1338  # libfranka's command ports


class Realtime(enum.Enum):
    """libfranka's real-time setting: a lab machine runs a PREEMPT_RT kernel and enforces it."""

    ENFORCE = "enforce"
    IGNORE = "ignore"  # laptops and simulators: no real-time kernel


# Ready pose of franka_ros / libfranka examples (`q_goal` of generate_joint_position_motion).
READY_POSE = (0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4)
# Collision thresholds (Nm per joint, N/Nm per Cartesian axis) of libfranka's examples'
# `setDefaultBehavior`; a reflex fires above them.
JOINT_TORQUE_THRESHOLDS = (20.0, 20.0, 18.0, 18.0, 16.0, 14.0, 12.0)
CARTESIAN_FORCE_THRESHOLDS = (20.0, 20.0, 20.0, 25.0, 25.0, 25.0)

FRANKA_SAFETY = SafetyLimits(
    workspace_low=(0.25, -0.45, 0.05),
    workspace_high=(0.75, 0.45, 0.75),
    max_translation=0.05,
    max_rotation=0.25,
)


@dataclasses.dataclass(frozen=True)
class FrankaConfig:
    """How to reach and drive one Franka arm."""

    host: str = "172.16.0.2"  # the FCI address of the control box
    realtime: Realtime = Realtime.ENFORCE  # IGNORE only without a real-time kernel (laptop, simulator)
    control_hz: float = 5.0
    relative_dynamics_factor: float = 0.1  # fraction of the robot's velocity/acceleration/jerk limits
    home: tuple[float, ...] = READY_POSE
    joint_torque_thresholds: tuple[float, ...] = JOINT_TORQUE_THRESHOLDS
    cartesian_force_thresholds: tuple[float, ...] = CARTESIAN_FORCE_THRESHOLDS
    gripper: bool = True  # a Franka Hand on port 1338
    gripper_speed: float = 0.1  # m/s
    gripper_force: float = 20.0  # N when grasping
    gripper_threshold: float = 0.5  # action gripper above this opens
    recover_on_reset: bool = True  # call libfranka's automatic error recovery at reset
    cameras: tuple[CameraConfig, ...] = ()
    safety: SafetyLimits = FRANKA_SAFETY

    def __post_init__(self) -> None:
        if len(self.home) != 7:
            raise ConfigError(f"home pose has {len(self.home)} angles; a Franka has 7 joints")
        if len(self.joint_torque_thresholds) != 7 or len(self.cartesian_force_thresholds) != 6:
            raise ConfigError("collision thresholds need 7 joint torques and 6 Cartesian forces/torques")
        if not 0.0 < self.relative_dynamics_factor <= 1.0:
            raise ConfigError(f"relative_dynamics_factor must be in (0, 1], got {self.relative_dynamics_factor}")
        if self.control_hz <= 0:
            raise ConfigError(f"control_hz must be > 0, got {self.control_hz}")

    def spec(self) -> EmbodimentSpec:
        """The embodiment this arm presents (end-effector deltas + gripper)."""
        return delta_pose_spec("franka", self.control_hz, self.safety, self.cameras)

    def make(self):
        """Connect to the arm (and open its cameras)."""
        from hardware.franka.driver import Franka

        return Franka(self)
