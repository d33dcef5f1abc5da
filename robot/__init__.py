"""robot: what sim and hardware share — the Robot/Policy/Camera protocols, specs, rigs, safety, control loop."""
from robot.errors import (
    MissingCameraError,
    PolicyOutputError,
    RobotError,
    SpecError,
    UnknownRigError,
    UnsafeActionError,
)
from robot.loop import EpisodeResult, run_episode
from robot.protocols import Camera, Policy, Robot
from robot.rigs import NAMED_RIGS, Rig, apply_rig, resolve_rig
from robot.safety import SafetyFilter, SafetyLimits, SafetyReport, check_action
from robot.types import ACTION_NAMES, ACTION_UNITS, CameraSpec, EmbodimentSpec, Observation, StepResult

__all__ = [
    "ACTION_NAMES",
    "ACTION_UNITS",
    "Camera",
    "CameraSpec",
    "EmbodimentSpec",
    "EpisodeResult",
    "MissingCameraError",
    "NAMED_RIGS",
    "Observation",
    "Policy",
    "PolicyOutputError",
    "Rig",
    "Robot",
    "RobotError",
    "SafetyFilter",
    "SafetyLimits",
    "SafetyReport",
    "SpecError",
    "StepResult",
    "UnknownRigError",
    "UnsafeActionError",
    "apply_rig",
    "check_action",
    "resolve_rig",
    "run_episode",
]
