"""The task registry: a plain dict, task name -> config. Add a task by adding an entry here.

Every config follows `sim.config.TaskConfig`; WidowX names start with `widowx-`.
"""
from __future__ import annotations

import difflib

from sim.config import TaskConfig
from sim.errors import UnknownTaskError
from sim.robosuite_tasks import PlacementRange, RobosuiteTask, TableArea
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
    # robosuite Panda scenes; placement ranges are robosuite's defaults (metres from the table /
    # source-bin centre; rotation None = any yaw)
    "lift": RobosuiteTask(
        env_name="Lift",
        description="robosuite Panda: lift the red cube off the table",
        instruction="lift the red cube",
        grasp_body="cube_main",
        placement=PlacementRange(x=(-0.03, 0.03), y=(-0.03, 0.03)),
        max_steps=60,
    ),
    "stack": RobosuiteTask(
        env_name="Stack",
        description="robosuite Panda: stack the red cube on the green cube",
        instruction="stack the red cube on the green cube",
        grasp_body="cubeA_main",
        target_body="cubeB_main",
        place_height=0.05,  # cube half sizes 0.02 + 0.025, and 5 mm to drop
        placement=PlacementRange(x=(-0.08, 0.08), y=(-0.08, 0.08)),
        max_steps=120,
    ),
    "pick-place-can": RobosuiteTask(
        env_name="PickPlaceCan",
        description="robosuite Panda: pick the can from the left bin and put it in its quarter of the right bin",
        instruction="pick up the can and put it in its bin",
        grasp_body="Can_main",
        target_body="VisualCan_main",  # the can's marker, centre of its quarter of the target bin
        # the marker (0.86 m from the base, 0.05 m below it) is beyond the reach of a Panda whose
        # gripper points down; release in the robot-near part of the quarter, 7-8 cm clear of its walls
        target_offset=(-0.0275, -0.0425),
        place_height=0.05,
        grasp_symmetry=None,  # a cylinder: any yaw grasps it
        sampler="CollisionObjectSampler",
        placement=PlacementRange(x=(-0.145, 0.145), y=(-0.195, 0.195)),
        max_steps=150,
        # no table: textures go on both bins; distractors stand in the source bin (floor top z = 0.82),
        # 3 cm inside its walls
        table_materials=("light-wood", "dark-wood"),
        distractor_area=TableArea(x=(-0.06, 0.26), y=(-0.46, -0.04), z=0.82),
    ),
}


def get_task(name: str) -> TaskConfig:
    """The config registered as `name`; unknown names raise, listing the known ones."""
    if name not in TASKS:
        near = difflib.get_close_matches(name, TASKS, n=1)
        hint = f" did you mean {near[0]!r}?" if near else ""
        raise UnknownTaskError(f"no sim task {name!r};{hint} known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def describe_tasks() -> str:
    """One line per task: name first, then its description (what `vla sim list` prints)."""
    width = max(map(len, TASKS))
    return "\n".join(f"{name:<{width}}  {cfg.description}" for name, cfg in TASKS.items())
