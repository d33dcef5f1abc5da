"""The seams between robots, cameras and policies: structural `Protocol`s, nothing to inherit."""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from robot.types import EmbodimentSpec, Observation, StepResult


@runtime_checkable
class Robot(Protocol):
    """A simulated or real robot driven by 7-dim end-effector delta actions."""

    spec: EmbodimentSpec

    def reset(self, seed: int | None = None) -> Observation:
        """Start a new episode (new object poses for `seed`) and return the first observation."""
        ...

    def observe(self) -> Observation:
        """Read the current observation without moving."""
        ...

    def act(self, action: np.ndarray) -> StepResult:
        """Apply one action (shape [spec.action_dim]) for one control period."""
        ...

    def close(self) -> None:
        """Release the hardware or the renderer."""
        ...


@runtime_checkable
class Policy(Protocol):
    """Anything that maps an observation (images keyed by role) and an instruction to an action.

    `act` returns an np.ndarray action or an object with an `.action` array (e.g. a server reply).
    """

    def act(self, obs: Observation, instruction: str) -> Any:
        """Choose the next action."""
        ...


@runtime_checkable
class Camera(Protocol):
    """One image source of a real rig (a sim scene renders its own cameras)."""

    name: str

    def read(self) -> np.ndarray:
        """The latest frame, uint8 [H, W, 3]."""
        ...

    def close(self) -> None:
        """Release the device."""
        ...
