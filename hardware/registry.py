"""Robots this package drives, as data: name -> config class. `vla robot --robot NAME` picks one."""
from __future__ import annotations

import difflib

from hardware.cameras import parse_camera
from hardware.errors import ConfigError
from hardware.franka.config import FrankaConfig, Realtime
from hardware.widowx.config import WidowXConfig

ROBOTS: dict[str, type] = {"widowx": WidowXConfig, "franka": FrankaConfig}


def robot_config_class(name: str) -> type:
    """The config class registered as `name`, or an error naming the known robots."""
    if name not in ROBOTS:
        near = difflib.get_close_matches(name, ROBOTS, n=1)
        raise ConfigError(f"no robot {name!r}; did you mean {near}? known: {sorted(ROBOTS)}")
    return ROBOTS[name]

# robot -> the connection settings it takes (the CLI's --port/--baud or --host/--realtime)
CONNECTION_FIELDS: dict[str, tuple[str, ...]] = {
    "widowx": ("port", "baud", "timeout_margin_ms"),
    "franka": ("host", "realtime"),
}


def build_robot_config(name: str, cameras: tuple[str, ...] = (), control_hz: float | None = None, **connection):
    """A robot config from CLI-style settings; a setting the robot does not take is an error, not ignored."""
    cls = robot_config_class(name)
    given = {k: v for k, v in connection.items() if v is not None}
    foreign = sorted(set(given) - set(CONNECTION_FIELDS[name]))
    if foreign:
        raise ConfigError(f"{name} does not take {['--' + f for f in foreign]}; it takes "
                          f"{['--' + f for f in CONNECTION_FIELDS[name]]}")
    if "realtime" in given:
        try:
            given["realtime"] = Realtime(given["realtime"])
        except ValueError as e:
            raise ConfigError(f"--realtime {given['realtime']!r}: use one of {[r.value for r in Realtime]}") from e
    if control_hz is not None:
        given["control_hz"] = control_hz
    return cls(**given, cameras=tuple(parse_camera(c) for c in cameras))
