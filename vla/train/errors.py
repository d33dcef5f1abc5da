"""Errors a user of `vla.train` can cause; every message names the problem and the fix."""
from __future__ import annotations


class TrainError(Exception):
    """Base class of every error raised by `vla.train`."""


class TrainConfigError(TrainError, ValueError):
    """Flags that contradict each other or that this machine cannot run (e.g. batch not divisible)."""


class OutputExistsError(TrainError, FileExistsError):
    """The output folder exists and neither --resume nor --overwrite was given."""


class ResumeError(TrainError, ValueError):
    """--resume without a complete checkpoint, or with a checkpoint of another run configuration."""


class IncompatibleDataError(TrainError, ValueError):
    """The dataset does not fit the base model (action dimensions) or has too few episodes."""


class MissingStatisticsError(TrainError, ValueError):
    """A dataset's normalization statistics are absent or lack what normalization needs."""


class NonFiniteLossError(TrainError, FloatingPointError):
    """The loss became NaN or infinite; the message names the step and batch."""


class TrainOutOfMemoryError(TrainError, MemoryError):
    """The step ran out of memory; the message suggests QLoRA or a smaller batch."""


class ReplicaMismatchError(TrainError, RuntimeError):
    """Data-parallel replicas hold different weights (should never happen; a bug or a broken backend)."""
