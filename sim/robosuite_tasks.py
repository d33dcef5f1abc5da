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
        _check_ranges("placement", x=self.x, y=self.y, rotation=self.rotation)


@dataclasses.dataclass(frozen=True)
class TableArea:
    """Where distractors stand: world x/y ranges (metres) on the surface at world height z."""

    x: tuple[float, float]
    y: tuple[float, float]
    z: float

    def __post_init__(self) -> None:
        _check_ranges("distractor area", x=self.x, y=self.y, z=(self.z, self.z))


def _check_ranges(what: str, **ranges: tuple[float, float] | None) -> None:
    for name, span in ranges.items():
        if span is None:
            continue
        lo, hi = span
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise SceneOptionError(f"{what} {name} range {(lo, hi)} must be finite with low <= high")


# robosuite's TableArena (Lift, Stack): a 0.8 m square table whose top is at z = 0.8; the area is
# the part the agentview camera sees, short of the robot's base at x = -0.56
TABLE_ARENA_AREA = TableArea(x=(-0.20, 0.25), y=(-0.28, 0.28), z=0.8)


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
    # visual materials a table_texture replaces (robosuite's table top; () = no surface to texture)
    table_materials: tuple[str, ...] = ("table_ceramic",)
    distractor_area: TableArea | None = TABLE_ARENA_AREA  # None: the scene cannot take distractors
    env_kwargs: Mapping[str, object] = dataclasses.field(default_factory=dict)  # extra robosuite arguments

    def make(self, seed: int | None = None, options: SceneOptions = SceneOptions()) -> Robot:
        """Build the scene (a `robot.Robot`); `seed` fixes the episode seeds drawn by `reset()`."""
        from sim.robosuite_scenes import RobosuiteScene

        return RobosuiteScene(self, options, seed=seed)

    def expert(self, robot: Robot, variant: str = "expert", seed: int = 0) -> Policy:
        """The scripted waypoint expert for this task (`expert`, `noisy` or `suboptimal`)."""
        from sim.robosuite_experts import make_expert

        return make_expert(self, robot, variant, seed)
