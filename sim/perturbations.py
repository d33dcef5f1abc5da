"""Named out-of-distribution conditions for eye-in-hand studies, and checks on perturbation options.

"Someone bumped the tripod": the camera-shift levels move the third-person camera 2, 5 and 10 cm
and turn it 5, 10 and 15 degrees (direction from the episode seed, see `sim.config.CameraShift`);
`texture` swaps the table for a procedural texture never seen in the demos (they use the plain
wood); `distractors` adds three objects. A wrist camera moves with the hand, so a shift cannot
touch it; a texture and distractors change what both cameras see.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from robot import NAMED_RIGS, Rig
from sim.config import CameraShift
from sim.errors import SceneOptionError

THIRD_PERSON_ROLE = "primary"  # the role whose camera a shift moves
OOD_TEXTURE = "checker"  # the benchmark's unseen table (demos use the default wood)
OOD_DISTRACTORS = 3
PLACEMENT_TRIES = 1000  # rejection-sampling attempts per distractor before the table counts as full
CAMERA_SHIFT_STREAM = 0xCA  # the shift's own draw from the episode seed: object placements stay unchanged


@dataclasses.dataclass(frozen=True)
class Condition:
    """One evaluation condition: the perturbations `sim.make` gets (nothing set = in distribution)."""

    camera_shift: CameraShift | None = None
    table_texture: str | None = None
    distractors: int = 0

    def scene_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `sim.make` / `sim.evaluate.EvalConfig`."""
        return dataclasses.asdict(self) | {"camera_shift": self.camera_shift}


# condition name -> perturbations, in the order the benchmark reports them
CONDITIONS: dict[str, Condition] = {
    "id": Condition(),
    "shift_1": Condition(camera_shift=CameraShift(0.02, 5.0)),
    "shift_2": Condition(camera_shift=CameraShift(0.05, 10.0)),
    "shift_3": Condition(camera_shift=CameraShift(0.10, 15.0)),
    "texture": Condition(table_texture=OOD_TEXTURE),
    "distractors": Condition(distractors=OOD_DISTRACTORS),
}
SHIFT_CONDITIONS = ("shift_1", "shift_2", "shift_3")


def get_condition(name: str) -> Condition:
    """The condition called `name`; unknown names raise, listing the known ones."""
    if name not in CONDITIONS:
        raise SceneOptionError(f"no evaluation condition {name!r}; conditions are {list(CONDITIONS)}")
    return CONDITIONS[name]


def rig_roles(rig: str | Rig | Mapping[str, str]) -> tuple[str, ...] | None:
    """The camera roles a rig gives the policy (None for an unknown rig name, left to `resolve_rig`)."""
    if isinstance(rig, str):
        return NAMED_RIGS.get(rig)
    if isinstance(rig, Rig):
        return tuple(rig.cameras)
    return tuple(rig)


def check_camera_shift(rig: str | Rig | Mapping[str, str], shift: CameraShift | None) -> None:
    """Refuse a camera shift when the rig has no third-person camera to move."""
    roles = rig_roles(rig)
    if shift is None or roles is None or THIRD_PERSON_ROLE in roles:
        return
    fits = [name for name, r in NAMED_RIGS.items() if THIRD_PERSON_ROLE in r]
    raise SceneOptionError(
        f"camera shift {shift} moves the third-person ({THIRD_PERSON_ROLE!r}) camera, but rig {rig!r} gives only "
        f"{list(roles)}; drop the shift (a wrist camera moves with the hand) or use a rig with it: {fits}")


def shifted_camera_pose(
    pos: np.ndarray, quat_wxyz: np.ndarray, shift: CameraShift, episode_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A camera pose moved `shift.distance_m` and turned `shift.angle_deg`, directions drawn from the seed."""
    import mujoco  # its quaternion product; the module stays importable without MuJoCo

    # both directions uniform on the sphere, in the camera's parent frame (every scene shares them)
    rng = np.random.default_rng([episode_seed, CAMERA_SHIFT_STREAM])
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    half = math.radians(shift.angle_deg) / 2
    turn = np.concatenate([[math.cos(half)], math.sin(half) * axis])
    turned = np.empty(4)
    mujoco.mju_mulQuat(turned, turn, np.asarray(quat_wxyz, np.float64))
    return np.asarray(pos, np.float64) + shift.distance_m * direction, turned


def table_spots(
    rng: np.random.Generator,
    x: tuple[float, float],
    y: tuple[float, float],
    taken: list[np.ndarray],
    count: int,
    clearance: float,
    tries: int = PLACEMENT_TRIES,
) -> list[np.ndarray]:
    """`count` x/y points drawn in the box, each `clearance` from the `taken` ones and from each other."""
    taken, spots = list(taken), []
    for _ in range(count):
        for _ in range(tries):
            xy = np.array([rng.uniform(*x), rng.uniform(*y)])
            if all(np.linalg.norm(xy - other) >= clearance for other in taken):
                break
        else:
            raise SceneOptionError(
                f"no free table space for {count} distractors {clearance} m apart in x {x}, y {y}; ask for fewer"
            )
        taken.append(xy)
        spots.append(xy)
    return spots
