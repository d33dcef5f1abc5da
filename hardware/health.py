"""`vla robot check`: read every servo / joint / camera once and report; never enables torque or moves.

The WidowX check talks to the bus directly (ping, read) instead of through the driver, because
connecting the driver writes EEPROM settings; the Franka check only reads the robot state.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from hardware.cameras import CameraConfig
from hardware.errors import HardwareError, ServoMissingError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class HealthRow:
    """One servo, joint or camera: its readings and what is wrong with it (empty when fine)."""

    name: str
    values: dict[str, str]
    problem: str = ""


@dataclasses.dataclass(frozen=True)
class HealthReport:
    """Rows per part plus robot-wide notes; `ok` when nothing is missing or faulted."""

    title: str
    rows: tuple[HealthRow, ...]
    notes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()  # robot-wide problems (mode, errors, unreachable)

    @property
    def ok(self) -> bool:
        """Whether every part answered and none reports a fault."""
        return not self.problems and all(not r.problem for r in self.rows)

    def table(self) -> str:
        """A fixed-width text table a person can read."""
        columns = ["name", *dict.fromkeys(k for r in self.rows for k in r.values), "status"]
        cells = [[r.name, *(r.values.get(c, "-") for c in columns[1:-1]), r.problem or "ok"] for r in self.rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
        lines = [self.title, "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
        lines += [f"note: {n}" for n in self.notes] + [f"PROBLEM: {p}" for p in self.problems]
        lines.append("OK" if self.ok else "NOT OK")
        return "\n".join(lines)


def check_widowx(config) -> HealthReport:
    """Ping and read every servo of a WidowX chain (reads only)."""
    from hardware.dynamixel.bus import DynamixelBus
    from hardware.dynamixel.tables import MODELS, MODELS_BY_NUMBER
    from hardware.widowx.config import count_to_rad
    from hardware.widowx.driver import fault_names

    bus = DynamixelBus(config.port, config.baud, config.timeout_margin_ms)
    rows = []
    try:
        for s in config.servos:
            try:
                number = bus.ping(s.id)
            except ServoMissingError:
                rows.append(HealthRow(s.joint, {"id": str(s.id)}, f"no answer (expected {s.model})"))
                continue
            model = MODELS_BY_NUMBER.get(number)
            values = {"id": str(s.id), "model": model.name if model else f"unknown ({number})"}
            if model is None or model.name != s.model:
                rows.append(HealthRow(s.joint, values, f"model {number}, expected {s.model} ({MODELS[s.model].number})"))
                continue
            r = bus.read_block(s.id, model, "torque_enable", "present_temperature")
            values |= {
                "position": f"{count_to_rad(r['present_position']):+.3f} rad ({r['present_position']})",
                "temp": f"{r['present_temperature']} C",
                "voltage": f"{r['present_input_voltage'] * model.voltage_unit_v:.1f} V",
                "torque": "on" if r["torque_enable"] else "off",
                "hw_error": ",".join(fault_names(r["hardware_error_status"])) if r["hardware_error_status"] else "none",
            }
            problem = f"hardware error: {values['hw_error']} (reboot or power-cycle)" if r["hardware_error_status"] else ""
            rows.append(HealthRow(s.joint, values, problem))
    finally:
        bus.close()
    return HealthReport(f"WidowX 250 on {config.port} at {config.baud} baud", tuple(rows))


def check_franka(config) -> HealthReport:
    """Connect to a Franka and read joints, mode and errors once (reads only)."""
    from hardware.franka.config import Realtime
    from hardware.franka.driver import _import_franky, _translate

    franky = _import_franky()
    rt = franky.RealtimeConfig.Ignore if config.realtime is Realtime.IGNORE else franky.RealtimeConfig.Enforce
    try:
        robot = franky.Robot(config.host, realtime_config=rt)
        state, joints = robot.state, robot.current_joint_state
    except franky.Exception as e:
        error = _translate(franky, e, config.host, "connect")
        return HealthReport(f"Franka at {config.host}", (), problems=(str(error),))
    q, dq = np.asarray(joints.position), np.asarray(joints.velocity)
    rows = tuple(HealthRow(f"joint {i + 1}", {"position": f"{q[i]:+.4f} rad", "velocity": f"{dq[i]:+.4f} rad/s"})
                 for i in range(len(q)))
    mode, errors = str(state.robot_mode).split(".")[-1], str(state.current_errors)
    problems = []
    if errors not in ("", "[]"):
        problems.append(f"current errors: {errors} (clear them with automatic error recovery)")
    if mode in ("Reflex", "UserStopped", "Other"):
        problems.append(f"robot mode {mode}: release the user stop / recover in Desk")
    del robot  # disconnect now
    return HealthReport(f"Franka at {config.host}", rows, notes=(f"robot mode: {mode}", f"errors: {errors}"),
                        problems=tuple(problems))


def check_cameras(configs: tuple[CameraConfig, ...]) -> HealthReport:
    """Open each camera and read one frame."""
    rows = []
    for c in configs:
        try:
            cam = c.make()
        except HardwareError as e:
            rows.append(HealthRow(c.name, {"role": c.role}, str(e)))
            continue
        try:
            frame = cam.read_frame()
            h, w = frame.image.shape[:2]
            rows.append(HealthRow(c.name, {"role": c.role, "size": f"{w}x{h}", "mean": f"{frame.image.mean():.0f}"}))
        except HardwareError as e:
            rows.append(HealthRow(c.name, {"role": c.role}, str(e)))
        finally:
            cam.close()
    return HealthReport("cameras", tuple(rows))


CHECKS = {"widowx": check_widowx, "franka": check_franka}  # robot name -> its health check
