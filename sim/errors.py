"""Errors a user of `sim/` can cause; all derive from `SimError`."""
from __future__ import annotations


class SimError(Exception):
    """Base class for every error raised by `sim/`."""


class UnknownTaskError(SimError):
    """A task name that is not in `sim.registry.TASKS`."""


class RenderBackendError(SimError):
    """No offscreen OpenGL backend (EGL or OSMesa) works on this machine."""


class SceneOptionError(SimError):
    """A scene option that the task cannot honour (bad camera shift, unknown texture, ...)."""


class UnknownExpertError(SimError):
    """An expert variant that a task does not provide."""


class CollectError(SimError):
    """Bad arguments to demo collection (episode count, mix, output folder)."""


class EvalError(SimError):
    """Bad arguments to the evaluation harness (policy address, checkpoint, summary files)."""
