"""Errors a user of the robot interface can cause; all derive from `RobotError`."""
from __future__ import annotations


class RobotError(Exception):
    """Base class for every error raised by `robot/`."""


class SpecError(RobotError):
    """An `EmbodimentSpec` or safety limit that contradicts itself."""


class UnsafeActionError(RobotError):
    """An action that must not reach a robot: wrong shape, NaN or infinite entries."""


class UnknownRigError(RobotError):
    """A camera-rig name that is not defined."""


class MissingCameraError(RobotError):
    """An observation or robot lacks a camera that the rig needs."""


class PolicyOutputError(RobotError):
    """A policy returned something that is not an action."""
