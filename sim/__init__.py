"""sim: MuJoCo scenes implementing `robot.Robot`, scripted experts, demo collection, evaluation."""
from __future__ import annotations

from collections.abc import Mapping

from robot import Rig, Robot
from sim.config import CameraShift, SceneOptions, TaskConfig
from sim.registry import TASKS, get_task


def make(
    task: str,
    seed: int | None = None,
    rig: str | Rig | Mapping[str, str] = "both",
    camera_shift: CameraShift | None = None,
    table_texture: str | None = None,
    distractors: int = 0,
    image_size: int = 128,
) -> Robot:
    """Build the scene for registered `task` (see `sim.registry.TASKS`)."""
    options = SceneOptions(
        rig=rig, image_size=image_size, camera_shift=camera_shift, table_texture=table_texture, distractors=distractors
    )
    return get_task(task).make(seed=seed, options=options)


__all__ = ["TASKS", "CameraShift", "SceneOptions", "TaskConfig", "get_task", "make"]
