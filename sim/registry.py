"""The task registry: a plain dict, task name -> config. Add a task by adding an entry here.

Every config follows `sim.config.TaskConfig`; WidowX names start with `widowx-`.
"""
from __future__ import annotations

import difflib

from sim.config import TaskConfig
from sim.errors import UnknownTaskError
from sim.widowx.tasks import WidowXTask

TASKS: dict[str, TaskConfig] = {
    "widowx-block-in-bowl": WidowXTask(
        goal="block_in_bowl",
        description="WidowX 250: put the red block in the bowl (Bridge-style tabletop)",
        instruction="put the red block in the bowl",
    ),
    "widowx-push-left": WidowXTask(
        goal="push_left",
        description="WidowX 250: push the red block 6 cm to the robot's left",
        instruction="push the block to the left",
        max_steps=30,
        block_y=(-0.10, 0.04),
        uses_bowl=False,
    ),
    "widowx-pick-block": WidowXTask(
        goal="pick_block",
        description="WidowX 250: pick the red block up 5 cm off the table",
        instruction="pick up the red block",
        max_steps=30,
        uses_bowl=False,
    ),
}


def get_task(name: str) -> TaskConfig:
    """The config registered as `name`; unknown names raise, listing the known ones."""
    if name not in TASKS:
        near = difflib.get_close_matches(name, TASKS, n=1)
        hint = f" did you mean {near[0]!r}?" if near else ""
        raise UnknownTaskError(f"no sim task {name!r};{hint} known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]
