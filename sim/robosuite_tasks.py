"""robosuite task configs: environment, language, randomization ranges and expert targets.

Plain data, cheap to import: the registry lists tasks without importing robosuite, MuJoCo or scipy;
`RobosuiteTask.make` builds the scene (sim.robosuite_scenes) only when asked.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from robot import Policy, Robot
from sim.config import SceneOptions
from sim.errors import SceneOptionError


@dataclasses.dataclass(frozen=True)
class PlacementRange:
    """Where robosuite may put the task's movable objects at reset.

    x/y are metres relative to the sampler's reference point (table centre; for PickPlace the
    centre of the source bin); rotation is the yaw range in radians (None: any yaw).
    """

    x: tuple[float, float]
    y: tuple[float, float]
    rotation: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        for name in ("x", "y") + (("rotation",) if self.rotation is not None else ()):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise SceneOptionError(f"placement {name} range {(lo, hi)} must be finite with low <= high")


@dataclasses.dataclass(frozen=True)
class RobosuiteTask:
    """One robosuite task with a Panda: environment, language, randomization, expert targets."""

    env_name: str  # robosuite environment class, e.g. "Lift"
    description: str
    instruction: str
    grasp_body: str  # MuJoCo body the expert picks up
    placement: PlacementRange
    sampler: str = "ObjectSampler"  # robosuite placement sampler (or sub-sampler) the range applies to
    target_body: str | None = None  # body the grasped object goes onto / into (None: just lift)
    place_height: float = 0.0  # metres above the target body's origin where the object is released
    target_offset: tuple[float, float] = (0.0, 0.0)  # x, y (base frame, metres) added to the target body
    lift_height: float = 0.10  # metres the grasped object is raised above its start
    grasp_symmetry: float | None = math.pi / 2  # yaw period of the grasp (cube: 90 deg; None: any yaw)
    grasp_depth: float = 0.0  # metres below the grasp body's origin where the fingertips close
    max_steps: int = 100
    control_hz: int = 10
    env_kwargs: Mapping[str, object] = dataclasses.field(default_factory=dict)  # extra robosuite arguments

    def make(self, seed: int | None = None, options: SceneOptions = SceneOptions()) -> Robot:
        """Build the scene (a `robot.Robot`); `seed` fixes the episode seeds drawn by `reset()`."""
        from sim.robosuite_scenes import RobosuiteScene

        return RobosuiteScene(self, options, seed=seed)

    def expert(self, robot: Robot, variant: str = "expert", seed: int = 0) -> Policy:
        """The scripted waypoint expert for this task (`expert`, `noisy` or `suboptimal`)."""
        from sim.robosuite_experts import make_expert

        return make_expert(self, robot, variant, seed)
