"""The safety filter shared by sim and hardware: it bounds every action and says what it changed.

Limits apply in this order: per-step translation, per-step rotation, gripper range, then the
workspace box (the translation is shortened so the end effector stays inside the box). Every
clamp is returned in the `SafetyReport`, logged, and counted; malformed actions raise before
anything moves.
"""
from __future__ import annotations

import collections
import dataclasses
import logging

import numpy as np

from robot.errors import SpecError, UnsafeActionError

log = logging.getLogger(__name__)

ACTION_DIM = 7  # [dx, dy, dz, droll, dpitch, dyaw, gripper]


@dataclasses.dataclass(frozen=True)
class SafetyLimits:
    """Bounds for one robot; units are metres and radians per control step."""

    workspace_low: tuple[float, float, float]  # end-effector box, robot base frame
    workspace_high: tuple[float, float, float]
    max_translation: float  # largest |dx|, |dy|, |dz| in one step
    max_rotation: float  # largest |droll|, |dpitch|, |dyaw| in one step
    gripper_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.workspace_low) != 3 or len(self.workspace_high) != 3:
            raise SpecError("workspace_low and workspace_high need three entries (x, y, z)")
        if any(lo >= hi for lo, hi in zip(self.workspace_low, self.workspace_high)):
            raise SpecError(f"workspace_low {self.workspace_low} must be below workspace_high {self.workspace_high}")
        if self.max_translation <= 0 or self.max_rotation <= 0:
            raise SpecError(
                f"max_translation ({self.max_translation}) and max_rotation ({self.max_rotation}) must be > 0"
            )
        if self.gripper_range[0] >= self.gripper_range[1]:
            raise SpecError(f"gripper_range {self.gripper_range} must be (low, high) with low < high")


@dataclasses.dataclass(frozen=True)
class Clamp:
    """One change the filter made: which limit, which action entry, what was asked and what is sent."""

    limit: str  # "translation", "rotation", "gripper" or "workspace"
    index: int  # action entry
    requested: float
    applied: float


@dataclasses.dataclass(frozen=True)
class SafetyReport:
    """Every clamp applied to one action (empty when the action passed unchanged)."""

    clamps: tuple[Clamp, ...] = ()

    @property
    def clamped(self) -> bool:
        """Whether the action was changed."""
        return bool(self.clamps)

    def __str__(self) -> str:
        if not self.clamps:
            return "no clamps"
        return "; ".join(f"{c.limit}[{c.index}] {c.requested:+.4f}->{c.applied:+.4f}" for c in self.clamps)


def check_action(action: object, dim: int = ACTION_DIM) -> np.ndarray:
    """Return `action` as float64 [dim], or raise `UnsafeActionError` for a wrong shape or NaN/inf."""
    arr = np.asarray(action)
    if arr.dtype.kind not in "fiu":
        raise UnsafeActionError(f"action has dtype {arr.dtype}; send numbers. The robot was not moved")
    if arr.shape != (dim,):
        raise UnsafeActionError(
            f"action has shape {arr.shape}; expected ({dim},) = [dx, dy, dz, droll, dpitch, dyaw, gripper]. "
            "The robot was not moved"
        )
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise UnsafeActionError(
            f"action has non-finite entries at {np.flatnonzero(~np.isfinite(arr)).tolist()}: {arr.tolist()}. "
            "The robot was not moved"
        )
    return arr


class SafetyFilter:
    """Callable `(action, state) -> (safe_action, SafetyReport)`; counts clamps per limit in `.counts`."""

    def __init__(self, limits: SafetyLimits, log_level: int = logging.WARNING) -> None:
        self.limits = limits
        self.log_level = log_level  # a sim that reports clamps in StepResult.info logs them at DEBUG
        self.counts: collections.Counter[str] = collections.Counter()

    def __call__(self, action: object, state: np.ndarray) -> tuple[np.ndarray, SafetyReport]:
        """Bound `action` given `state` (proprio whose first three entries are the end-effector xyz)."""
        lim = self.limits
        arr = check_action(action)
        pos = np.asarray(state, dtype=np.float64)
        if pos.ndim != 1 or pos.shape[0] < 3 or not np.all(np.isfinite(pos[:3])):
            raise UnsafeActionError(
                f"state {pos.tolist()} does not start with a finite end-effector xyz; the robot was not moved"
            )
        out = arr.copy()
        clamps: list[Clamp] = []

        def bound(limit: str, idx: int, lo: float, hi: float) -> None:
            value = out[idx]
            clipped = min(max(value, lo), hi)
            if clipped != value:
                clamps.append(Clamp(limit, idx, float(value), float(clipped)))
                out[idx] = clipped

        for i in range(3):
            bound("translation", i, -lim.max_translation, lim.max_translation)
        for i in range(3, 6):
            bound("rotation", i, -lim.max_rotation, lim.max_rotation)
        bound("gripper", 6, *lim.gripper_range)
        for i in range(3):
            # shorten the step so that position + step stays in the box
            bound("workspace", i, lim.workspace_low[i] - pos[i], lim.workspace_high[i] - pos[i])
        report = SafetyReport(tuple(clamps))
        for c in clamps:
            self.counts[c.limit] += 1
        if clamps:
            log.log(self.log_level, "safety filter clamped the action: %s", report)
        return out, report
