"""Errors a user of the hardware drivers can cause or meet; each message says what to do."""
from __future__ import annotations


class HardwareError(Exception):
    """Base class of every error raised by `hardware`."""


class ConfigError(HardwareError):
    """A configuration value is invalid (unknown robot, bad id map, bad camera settings)."""


class PortError(HardwareError):
    """A serial port or network address cannot be opened."""


class ServoMissingError(HardwareError):
    """A servo did not answer (after one retry)."""


class ServoModelError(HardwareError):
    """A servo answered with a model number other than the configured one."""


class ServoFaultError(HardwareError):
    """A servo reports a hardware error (overheating, overload, voltage, ...)."""


class CommunicationError(HardwareError):
    """A packet was corrupt or the servo rejected an instruction."""


class JointLimitError(HardwareError):
    """A commanded target lies outside the joint limits or the reachable workspace; nothing was sent."""


class CameraError(HardwareError):
    """A camera is missing, cannot deliver the configured format, or its SDK is not installed."""


class RealtimeKernelError(HardwareError):
    """libfranka refused to run on a kernel without real-time support."""


class RobotConnectionError(HardwareError):
    """The robot controller cannot be reached or dropped the connection."""


class RobotMotionError(HardwareError):
    """The robot controller aborted a motion (reflex, collision, limit)."""


class EStopError(HardwareError):
    """The operator pressed the e-stop key or Ctrl-C; the arm is holding its position."""


class WatchdogError(HardwareError):
    """No action arrived within the watchdog deadline; the arm held its position and stopped."""
