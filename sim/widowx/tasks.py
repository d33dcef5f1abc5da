"""WidowX task configs: what to randomize, what counts as success; scenes are built lazily."""
from __future__ import annotations

import dataclasses

from robot import Policy, Robot
from sim.config import SceneOptions
from sim.errors import SceneOptionError

GOALS = ("block_in_bowl", "push_left", "pick_block")  # success conditions the scene knows


@dataclasses.dataclass(frozen=True)
class WidowXTask:
    """A WidowX tabletop task: goal kind, instruction, randomization ranges (metres, base frame)."""

    goal: str  # one of GOALS
    description: str
    instruction: str
    max_steps: int = 40  # 8 s at 5 Hz
    block_x: tuple[float, float] = (0.26, 0.36)  # block centre range in front of the base
    block_y: tuple[float, float] = (-0.10, 0.10)
    bowl_x: tuple[float, float] = (0.26, 0.36)
    bowl_y: tuple[float, float] = (-0.14, 0.14)
    min_separation: float = 0.10  # block-to-bowl centre distance at reset
    push_distance: float = 0.06  # push_left: block must move this far in +y (robot's left)
    lift_height: float = 0.05  # pick_block: block bottom this far above the table
    uses_bowl: bool = True

    def __post_init__(self) -> None:
        if self.goal not in GOALS:
            raise SceneOptionError(f"WidowX goal {self.goal!r} is unknown; goals are {GOALS}")

    def make(self, seed: int | None = None, options: SceneOptions = SceneOptions()) -> Robot:
        """Build a `WidowXScene` for this task."""
        from sim.widowx.scene import WidowXScene

        return WidowXScene(self, options, seed=seed)

    def expert(self, robot: Robot, variant: str = "expert", seed: int = 0) -> Policy:
        """The scripted waypoint expert for this task (`expert`, `noisy` or `suboptimal`)."""
        from sim.widowx.experts import make_expert

        return make_expert(self, robot, variant, seed)
