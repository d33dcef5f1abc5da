"""What every task in the registry provides, and the scene options every scene accepts.

A task config is a small frozen dataclass that builds its scene only in `make` (so listing the
registry imports neither MuJoCo models nor robosuite). Scenes implement `robot.Robot`.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from robot import Policy, Rig, Robot
from sim.errors import SceneOptionError

EXPERT_VARIANTS = ("expert", "noisy", "suboptimal")  # clean, action noise, deliberate mistakes


@dataclasses.dataclass(frozen=True)
class CameraShift:
    """Move the third-person camera `distance_m` and turn it `angle_deg`; the direction comes from the seed."""

    distance_m: float
    angle_deg: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.distance_m) and math.isfinite(self.angle_deg)):
            raise SceneOptionError(f"camera shift {self} must be finite numbers")
        if self.distance_m < 0 or self.angle_deg < 0:
            raise SceneOptionError(
                f"camera shift {self}: give magnitudes >= 0; the direction is drawn from the episode seed"
            )

    @classmethod
    def parse(cls, text: str) -> CameraShift:
        """Parse "D,A" (metres, degrees), e.g. "0.05,10"."""
        parts = text.split(",")
        try:
            distance, angle = (float(p) for p in parts)
        except ValueError as e:
            raise SceneOptionError(
                f"camera shift {text!r} is not 'METRES,DEGREES' (e.g. '0.05,10')"
            ) from e
        return cls(distance, angle)


@dataclasses.dataclass(frozen=True)
class SceneOptions:
    """Per-scene choices beyond the seed: cameras rendered, image size, perturbations."""

    rig: str | Rig | Mapping[str, str] = "both"  # which cameras to render (see robot.rigs)
    image_size: int = 128  # square images, pixels
    camera_shift: CameraShift | None = None  # viewpoint perturbation of the third-person camera
    table_texture: str | None = None  # procedural table texture name (None: the plain table)
    distractors: int = 0  # extra objects on the table
    render_images: bool = True  # False: observations carry no images (throughput, privileged experts)

    def __post_init__(self) -> None:
        if not 16 <= self.image_size <= 1024:
            raise SceneOptionError(f"image_size {self.image_size} is outside 16..1024 pixels")
        if self.distractors < 0:
            raise SceneOptionError(f"distractors must be >= 0, got {self.distractors}")
        from sim.perturbations import check_camera_shift  # it builds on this module's CameraShift

        check_camera_shift(self.rig, self.camera_shift)


@runtime_checkable
class TaskConfig(Protocol):
    """One registry entry: describes a task and builds its scene and scripted experts."""

    description: str  # one line, shown by `vla sim list`
    instruction: str  # the language instruction given to policies
    max_steps: int  # default episode horizon in control steps

    def make(self, seed: int | None = None, options: SceneOptions = SceneOptions()) -> Robot:
        """Build the scene (a `robot.Robot`); `seed` fixes the first reset's randomization."""
        ...

    def expert(self, robot: Robot, variant: str = "expert", seed: int = 0) -> Policy:
        """A scripted expert (one of EXPERT_VARIANTS) that reads privileged state from `robot`."""
        ...
