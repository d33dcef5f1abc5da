"""Errors a user of `vla.rth` can cause; every message names the problem and the fix."""
from __future__ import annotations


class RTHError(Exception):
    """Base class of every error raised by `vla.rth`."""


class MotionSpecError(RTHError, ValueError):
    """A labelling setting that cannot work: window < 1, threshold <= 0, unknown axis, bad statistics."""


class NoEndEffectorError(RTHError, ValueError):
    """A dataset whose registry entry declares neither end-effector actions nor end-effector poses."""


class MotionError(RTHError, ValueError):
    """A motion that is empty or not a string."""


class MotionQueryError(RTHError, ValueError):
    """A motion asked of a checkpoint that was not trained with RT-H motion queries."""


class CorrectionsError(RTHError, ValueError):
    """Correction episodes that do not fit the base checkpoint (other checkpoint, task set, or no motions)."""


class MissingMotionsError(CorrectionsError):
    """RT-H training on a dataset without per-step `language_motion` (not labelled by `vla rth label`)."""


class IntervenerError(RTHError, ValueError):
    """An intervener that cannot run: a name `vla robot run --intervene` does not know, or clashing keys."""
