"""Errors a user of V-GPS can cause; every message names the problem and the fix."""
from __future__ import annotations


class VGPSError(Exception):
    """Base class of every error raised by `vla.vgps`."""


class UnknownPresetError(VGPSError, KeyError):
    """A Q-function preset, bounds or algorithm name that is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class QCheckpointError(VGPSError, ValueError):
    """A folder that is not a loadable Q-function: missing files, wrong keys or shapes."""


class QInputError(VGPSError, ValueError):
    """Images, instruction or candidate actions that the Q-function cannot score."""


class MismatchError(VGPSError, ValueError):
    """A Q-function and a policy that do not fit together (action dim, camera role)."""


class GuidanceError(VGPSError, ValueError):
    """Bad re-ranking settings (K < 1, beta < 0) or candidates that cannot be re-ranked."""


class SamplingError(GuidanceError):
    """A policy that returned K identical candidates: it does not sample."""


class ScoreError(VGPSError, FloatingPointError):
    """The Q-function produced NaN or inf scores."""


class TrainingDataError(VGPSError, ValueError):
    """A dataset that offline RL cannot train on (no instructions, no successful episode, too short)."""
