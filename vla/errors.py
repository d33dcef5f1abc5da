"""Errors a user of the `vla` model can cause; every message names the problem and the fix."""
from __future__ import annotations


class VLAError(Exception):
    """Base class of every error raised by `vla.model` (and the `vla` package root)."""


class UnknownPresetError(VLAError, KeyError):
    """A preset name that is not in `vla.model.presets.PRESETS`."""

    def __str__(self) -> str:  # KeyError would repr() the message and double its quotes
        return str(self.args[0])


class ConfigError(VLAError, ValueError):
    """A config.json (or a config value) that this code cannot build a model from."""


class CheckpointError(VLAError, ValueError):
    """A folder that is not a loadable checkpoint: missing files, wrong keys or shapes."""


class ImageError(VLAError, ValueError):
    """An image of the wrong type, shape or dtype."""


class InstructionError(VLAError, ValueError):
    """An instruction that is empty or not a string."""


class StatisticsError(VLAError, ValueError):
    """Normalization statistics that are missing, malformed, or do not fit the actions."""


class UnknownUnnormKeyError(StatisticsError, KeyError):
    """An `unnorm_key` that is not in the checkpoint's statistics (or None with several keys)."""

    def __str__(self) -> str:
        return str(self.args[0])


class ActionTokenError(VLAError, ValueError):
    """Actions outside [-1, 1] to encode, or token ids outside the action bins to decode."""


class QuantizationError(VLAError, ValueError):
    """A quantization mode that is unknown or that this machine's bitsandbytes cannot run."""


class LoraError(VLAError, ValueError):
    """LoRA asked of a model that cannot take it (already wrapped, not wrapped, quantized merge)."""
