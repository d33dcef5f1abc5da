"""Camera rigs: which of a robot's cameras the policy receives, under which role.

A rig is a mapping role -> camera name. The named rigs are resolved against a robot's
`EmbodimentSpec` (its cameras declare their default role), so `third_person` means
"the robot's primary camera as `primary`" on a WidowX scene and on a robosuite scene alike.
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping

from robot.errors import MissingCameraError, UnknownRigError
from robot.types import CAMERA_ROLES, EmbodimentSpec, Observation


@dataclasses.dataclass(frozen=True)
class Rig:
    """A resolved rig: role ("primary", "wrist", ...) -> camera name on the robot."""

    name: str
    cameras: Mapping[str, str]

    def __post_init__(self) -> None:
        bad = [r for r in self.cameras if r not in CAMERA_ROLES]
        if bad:
            raise UnknownRigError(f"rig {self.name!r} uses roles {bad}; roles are {CAMERA_ROLES}")
        if not self.cameras:
            raise UnknownRigError(f"rig {self.name!r} maps no camera; give at least one role")


# named rig -> roles it takes from the robot (each role filled by the camera declaring it)
NAMED_RIGS: dict[str, tuple[str, ...]] = {
    "third_person": ("primary",),
    "eye_in_hand": ("wrist",),
    "both": ("primary", "wrist"),
}


def resolve_rig(rig: str | Rig | Mapping[str, str], spec: EmbodimentSpec) -> Rig:
    """Turn a rig name, a `Rig` or a custom {role: camera} mapping into a `Rig` checked against `spec`."""
    if isinstance(rig, str):
        if rig not in NAMED_RIGS:
            near = difflib.get_close_matches(rig, NAMED_RIGS, n=1)
            raise UnknownRigError(
                f"no camera rig {rig!r}; did you mean {near}? named rigs: {sorted(NAMED_RIGS)}, "
                "or pass a custom {role: camera_name} mapping"
            )
        by_role = {c.role: c.name for c in spec.cameras}
        missing = [r for r in NAMED_RIGS[rig] if r not in by_role]
        if missing:
            raise MissingCameraError(
                f"rig {rig!r} needs roles {list(NAMED_RIGS[rig])} but {spec.name} has no camera for "
                f"{missing}; its cameras are {[(c.name, c.role) for c in spec.cameras]}. "
                f"Pick a rig that fits (roles it has: {sorted(by_role)})"
            )
        resolved = Rig(rig, {r: by_role[r] for r in NAMED_RIGS[rig]})
    elif isinstance(rig, Rig):
        resolved = rig
    else:
        resolved = Rig("custom", dict(rig))
    names = {c.name for c in spec.cameras}
    absent = [cam for cam in resolved.cameras.values() if cam not in names]
    if absent:
        raise MissingCameraError(
            f"rig {resolved.name!r} uses cameras {absent} that {spec.name} lacks; it has {sorted(names)}"
        )
    return resolved


def apply_rig(obs: Observation, rig: Rig) -> Observation:
    """Re-key an observation's images from camera name to role, keeping only the rig's cameras."""
    missing = [cam for cam in rig.cameras.values() if cam not in obs.images]
    if missing:
        raise MissingCameraError(
            f"observation lacks cameras {missing} needed by rig {rig.name!r}; it has {sorted(obs.images)}"
        )
    images = {role: obs.images[cam] for role, cam in rig.cameras.items()}
    return dataclasses.replace(obs, images=images)
