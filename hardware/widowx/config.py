"""WidowX 250 6-DoF configuration: the servo chain as data, poses, gripper linkage, limits.

Sources:
- Servo chain (ids, models, shadows, drive modes, position limits): Interbotix
  `interbotix_xsarm_control/config/wx250s.yaml` and `config/modes.yaml`, with the model numbers
  of the ROBOTIS e-Manual (XM430-W350 = 1020, XL430-W250 = 1060); see ../shared/HARDWARE.md.
  Shadows (3, 5) follow their masters (2, 4) through the Secondary ID register; the shadows and
  the wrist angle run in reverse drive mode.
- Sleep pose: `sleep_positions` of wx250s.yaml. Gripper linkage (horn radius 0.022 m, arm
  length 0.036 m) and finger travel 0.015-0.037 m: wx250s.yaml `grippers` and wx250s.urdf.xacro.
"""
from __future__ import annotations

import dataclasses
import math

from hardware.cameras import CameraConfig
from hardware.dynamixel.tables import MODELS, OperatingMode
from hardware.errors import ConfigError
from hardware.spec import delta_pose_spec
from robot.safety import SafetyLimits
from robot.types import EmbodimentSpec

COUNTS_PER_REV = 4096
CENTER_COUNT = 2048  # 0 rad


@dataclasses.dataclass(frozen=True)
class ServoConfig:
    """One servo of the chain."""

    joint: str  # e.g. "shoulder", "shoulder_shadow"
    id: int
    model: str  # key of hardware.dynamixel.tables.MODELS
    reverse: bool = False  # Drive Mode bit 0
    operating_mode: OperatingMode = OperatingMode.POSITION
    min_count: int = 0  # Min Position Limit
    max_count: int = 4095  # Max Position Limit
    shadow_of: str | None = None  # master joint whose id this servo takes as Secondary ID


WX250S_SERVOS: tuple[ServoConfig, ...] = (
    ServoConfig("waist", 1, "XM430-W350"),
    ServoConfig("shoulder", 2, "XM430-W350", min_count=819, max_count=3345),
    ServoConfig("shoulder_shadow", 3, "XM430-W350", reverse=True, min_count=819, max_count=3345, shadow_of="shoulder"),
    ServoConfig("elbow", 4, "XM430-W350", min_count=648, max_count=3094),
    ServoConfig("elbow_shadow", 5, "XM430-W350", reverse=True, min_count=648, max_count=3094, shadow_of="elbow"),
    ServoConfig("forearm_roll", 6, "XM430-W350"),
    ServoConfig("wrist_angle", 7, "XM430-W350", reverse=True, min_count=910, max_count=3447),
    ServoConfig("wrist_rotate", 8, "XL430-W250"),
    ServoConfig("gripper", 9, "XL430-W250", operating_mode=OperatingMode.PWM),
)
ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
GRIPPER_JOINT = "gripper"

# Bridge-style workspace in front of the base (metres, base frame) and per-step bounds at 5 Hz.
WIDOWX_SAFETY = SafetyLimits(
    workspace_low=(0.12, -0.30, 0.03),
    workspace_high=(0.45, 0.30, 0.40),
    max_translation=0.05,
    max_rotation=0.25,
)


def rad_to_count(angle: float) -> int:
    """Servo count of a joint angle (2048 = 0 rad, 4096 per turn)."""
    return round(CENTER_COUNT + angle * COUNTS_PER_REV / (2 * math.pi))


def count_to_rad(count: int) -> float:
    """Joint angle of a servo count."""
    return (count - CENTER_COUNT) * 2 * math.pi / COUNTS_PER_REV


@dataclasses.dataclass(frozen=True)
class GripperLinkage:
    """Horn-and-arm linkage turning the gripper servo angle into finger travel (Interbotix xs_sdk)."""

    horn_radius: float = 0.022
    arm_length: float = 0.036
    closed_m: float = 0.015  # finger travel when closed (URDF finger limit)
    open_m: float = 0.037

    def finger(self, angle: float) -> float:
        """Finger travel (m) for a gripper servo angle (rad)."""
        a1 = self.horn_radius * math.sin(angle)
        c = math.sqrt(max(self.horn_radius ** 2 - a1 ** 2, 0.0))
        return a1 + math.sqrt(self.arm_length ** 2 - c ** 2)

    def openness(self, angle: float) -> float:
        """0 = closed, 1 = open (may leave [0, 1] slightly when the fingers are forced)."""
        return (self.finger(angle) - self.closed_m) / (self.open_m - self.closed_m)


@dataclasses.dataclass(frozen=True)
class WidowXConfig:
    """How to reach and drive one WidowX 250 6-DoF."""

    port: str = "/dev/ttyDXL"  # the U2D2 (Interbotix udev rule name; else /dev/ttyUSB0)
    baud: int = 1_000_000
    timeout_margin_ms: float = 0.0  # added to the SDK's ~34 ms packet timeout (a loaded computer may need more)
    servos: tuple[ServoConfig, ...] = WX250S_SERVOS
    control_hz: float = 5.0  # Bridge data rate
    home: tuple[float, ...] = (0.0, -0.3, 0.5, 0.0, 1.3, 0.0)  # rad; fingertip 0.23 m ahead, 0.16 m up, pointing down
    sleep: tuple[float, ...] = (0.0, -1.80, 1.55, 0.0, 0.8, 0.0)  # wx250s.yaml sleep_positions
    profile_velocity: int = 100  # 0.229 rpm units: ~2.4 rad/s cap on each joint
    gripper_pwm: int = 350  # Interbotix gripper_pressure_upper_limit
    gripper_threshold: float = 0.5  # action gripper above this opens, at or below closes
    linkage: GripperLinkage = GripperLinkage()
    reach_tolerance_rad: float = 0.02  # a joint within this of its goal has arrived
    move_timeout_s: float = 10.0  # longest wait for reset/park motions
    reboot_on_error: bool = True  # reboot a servo with a latched hardware error once at connect
    cameras: tuple[CameraConfig, ...] = ()
    safety: SafetyLimits = WIDOWX_SAFETY

    def __post_init__(self) -> None:
        ids = [s.id for s in self.servos]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"servo ids repeat: {ids}; each servo needs its own id")
        joints = {s.joint for s in self.servos}
        missing = [j for j in (*ARM_JOINTS, GRIPPER_JOINT) if j not in joints]
        if missing:
            raise ConfigError(f"servo chain lacks joints {missing}; it has {sorted(joints)}")
        for s in self.servos:
            if s.model not in MODELS:
                raise ConfigError(f"servo {s.joint}: unknown model {s.model!r}; known: {sorted(MODELS)}")
            if s.operating_mode not in MODELS[s.model].operating_modes:
                raise ConfigError(f"servo {s.joint}: {s.model} has no {s.operating_mode.name} mode")
            if s.shadow_of is not None and s.shadow_of not in joints:
                raise ConfigError(f"servo {s.joint} shadows unknown joint {s.shadow_of!r}")
        for name, pose in (("home", self.home), ("sleep", self.sleep)):
            if len(pose) != len(ARM_JOINTS):
                raise ConfigError(f"{name} pose has {len(pose)} angles; give {len(ARM_JOINTS)} ({ARM_JOINTS})")
        if self.control_hz <= 0:
            raise ConfigError(f"control_hz must be > 0, got {self.control_hz}")

    def servo(self, joint: str) -> ServoConfig:
        """The servo driving `joint`."""
        for s in self.servos:
            if s.joint == joint:
                return s
        raise ConfigError(f"no servo for joint {joint!r}; joints: {[s.joint for s in self.servos]}")

    def spec(self) -> EmbodimentSpec:
        """The embodiment this arm presents (Bridge action space)."""
        return delta_pose_spec("widowx250", self.control_hz, self.safety, self.cameras)

    def make(self):
        """Connect to the arm (and open its cameras)."""
        from hardware.widowx.driver import WidowX

        return WidowX(self)
