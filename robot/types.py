"""Plain data that crosses the robot boundary: observations, step results, embodiment specs."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from robot.errors import MissingCameraError, SpecError

# The action layout shared by sim and hardware (Bridge / OpenVLA convention):
# [dx, dy, dz] metres, [droll, dpitch, dyaw] radians, gripper target in [0, 1] with 1 = open.
ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
ACTION_UNITS = ("m", "m", "m", "rad", "rad", "rad", "1=open,0=closed")
CAMERA_ROLES = ("primary", "secondary", "wrist")


@dataclasses.dataclass(frozen=True)
class Observation:
    """What a robot sees at one instant: images by camera name (or by role after a rig), proprio."""

    images: dict[str, np.ndarray]  # name (or role) -> uint8 [H, W, 3]
    proprio: np.ndarray | None  # float32 state; layout stated by EmbodimentSpec.proprio_names
    timestamp: float  # seconds; sim time for scenes, time.monotonic() for hardware
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What `Robot.act` returns: the next observation and the task's verdict."""

    observation: Observation
    reward: float
    done: bool  # the episode cannot continue (task over or robot stopped)
    success: bool  # the task's success condition holds now
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class CameraSpec:
    """One camera a robot provides: its name, the role it plays by default, its image size."""

    name: str
    role: str  # "primary" (third person), "secondary" or "wrist"
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.role not in CAMERA_ROLES:
            raise SpecError(f"camera {self.name!r} has role {self.role!r}; use one of {CAMERA_ROLES}")
        if self.height <= 0 or self.width <= 0:
            raise SpecError(f"camera {self.name!r} has size {self.height}x{self.width}; both must be > 0")


@dataclasses.dataclass(frozen=True)
class EmbodimentSpec:
    """Action space, control rate, proprio layout and cameras of a robot; known before connecting."""

    name: str
    control_hz: float
    action_low: tuple[float, ...]  # per-step bounds of each action entry (units: ACTION_UNITS)
    action_high: tuple[float, ...]
    cameras: tuple[CameraSpec, ...]
    proprio_names: tuple[str, ...]  # first three are the end-effector position in metres
    action_names: tuple[str, ...] = ACTION_NAMES
    action_units: tuple[str, ...] = ACTION_UNITS

    def __post_init__(self) -> None:
        n = len(self.action_names)
        for field in ("action_low", "action_high", "action_units"):
            if len(getattr(self, field)) != n:
                raise SpecError(f"{self.name}: {field} has {len(getattr(self, field))} entries, action has {n}")
        if any(lo > hi for lo, hi in zip(self.action_low, self.action_high)):
            raise SpecError(f"{self.name}: action_low {self.action_low} exceeds action_high {self.action_high}")
        if not (self.control_hz > 0 and math.isfinite(self.control_hz)):
            raise SpecError(f"{self.name}: control_hz must be a positive number, got {self.control_hz}")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise SpecError(f"{self.name}: camera names repeat: {names}")

    @property
    def action_dim(self) -> int:
        """Number of entries in one action."""
        return len(self.action_names)

    def camera(self, name: str) -> CameraSpec:
        """The camera called `name`."""
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise MissingCameraError(
            f"{self.name} has no camera {name!r}; its cameras are {[c.name for c in self.cameras]}"
        )
