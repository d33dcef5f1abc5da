"""What `vla robot run` and `vla robot check` do, importable and testable (scripts/robot.py only parses)."""
from __future__ import annotations

import logging

from hardware.health import CHECKS, check_cameras
from hardware.registry import build_robot_config
from hardware.runner import RunOptions, run

log = logging.getLogger(__name__)


def robot_check(robot: str, cameras: tuple[str, ...] = (), **connection) -> tuple[int, str]:
    """(exit code, table text): 0 when every servo/joint and camera answered without a fault."""
    config = build_robot_config(robot, cameras=cameras, **connection)
    reports = [CHECKS[robot](config)]
    if config.cameras:
        reports.append(check_cameras(config.cameras))
    return (0 if all(r.ok for r in reports) else 1), "\n\n".join(r.table() for r in reports)


def robot_run(robot: str, server: str, options: RunOptions, cameras: tuple[str, ...] = (),
              control_hz: float | None = None, **connection) -> tuple[int, str]:
    """(exit code, summary): 0 for an episode that ran to its end, 1 for watchdog/policy stops, 130 for e-stop."""
    config = build_robot_config(robot, cameras=cameras, control_hz=control_hz, **connection)
    report = run(config, server, options)
    code = 130 if report.estopped else (0 if report.reason in ("max_steps", "success", "done") else 1)
    return code, report.summary()


