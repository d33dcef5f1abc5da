"""`vla robot run|check`: drive a real WidowX 250 or Franka with a served policy, or check its health."""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import sys
from typing import Literal

import tyro

from hardware.cli import robot_check, robot_run
from hardware.errors import HardwareError
from hardware.runner import RunOptions
from robot.errors import RobotError
from serving.errors import ServingError


@dataclasses.dataclass(frozen=True)
class Run:
    """Run one episode of a served policy on a real arm (space/q/e or Ctrl-C: e-stop)."""

    robot: Literal["widowx", "franka"]
    server: str  # policy server address, tcp://HOST:PORT
    instruction: str  # task in words, e.g. "put the red block in the bowl"
    rig: str = "third_person"  # cameras the policy sees: third_person | eye_in_hand | both
    camera: tuple[str, ...] = ()  # ROLE=SOURCE[@WxH], e.g. primary=0@640x480, wrist=realsense:SERIAL
    port: str | None = None  # WidowX: U2D2 serial device (default /dev/ttyDXL)
    baud: int | None = None  # WidowX: bus baud (default 1000000)
    timeout_margin_ms: float | None = None  # WidowX: extra packet timeout on a loaded computer
    host: str | None = None  # Franka: FCI address of the control box
    realtime: Literal["enforce", "ignore"] | None = None  # Franka: ignore only without a real-time kernel
    control_hz: float | None = None  # control rate (default: the robot's, 5 Hz like Bridge)
    max_steps: int = 100
    unnorm_key: str | None = None  # dataset statistics the server un-normalizes with
    record_dir: pathlib.Path | None = None  # write the episode as RLDS under this folder
    dataset_name: str = "robot_rollouts"
    park: bool = True  # rest the arm after a normal end (never after an e-stop)
    # RT-H server only: "keyboard" lets you type the motion during the run (hotkeys w s a d r f j l c o x act at
    # once; "/any motion phrase" + Enter; Enter alone gives the motion back to the policy); needs --record-dir,
    # where the episode is written with per-step motion_source for `vla rth learn-corrections`
    intervene: str | None = None

    def run(self) -> int:
        options = RunOptions(instruction=self.instruction, rig=self.rig, max_steps=self.max_steps,
                             unnorm_key=self.unnorm_key, record_dir=self.record_dir,
                             dataset_name=self.dataset_name, park_at_end=self.park, intervene=self.intervene)
        code, text = robot_run(self.robot, self.server, options, cameras=self.camera, control_hz=self.control_hz,
                               port=self.port, baud=self.baud, timeout_margin_ms=self.timeout_margin_ms,
                               host=self.host, realtime=self.realtime)
        print(text)
        return code


@dataclasses.dataclass(frozen=True)
class Check:
    """Read every servo/joint (and camera) once and print a health table; never enables torque or moves."""

    robot: Literal["widowx", "franka"]
    port: str | None = None  # WidowX: U2D2 serial device (default /dev/ttyDXL)
    baud: int | None = None  # WidowX: bus baud (default 1000000)
    timeout_margin_ms: float | None = None  # WidowX: extra packet timeout on a loaded computer
    host: str | None = None  # Franka: FCI address of the control box
    realtime: Literal["enforce", "ignore"] | None = None  # Franka: ignore only without a real-time kernel
    camera: tuple[str, ...] = ()  # ROLE=SOURCE[@WxH]

    def run(self) -> int:
        code, text = robot_check(self.robot, cameras=self.camera, port=self.port, baud=self.baud,
                                 timeout_margin_ms=self.timeout_margin_ms, host=self.host, realtime=self.realtime)
        print(text)
        return code


def main(argv: list[str]) -> int:
    """Entry point of `vla robot`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    command = tyro.extras.subcommand_cli_from_dict({"run": Run, "check": Check}, prog="vla robot", args=argv)
    try:
        return command.run()
    except (HardwareError, RobotError, ServingError) as e:
        print(f"vla robot: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
