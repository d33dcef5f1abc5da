"""`vla demo`: collect scripted demos, fine-tune a small OpenVLA, serve it, evaluate it through the client.

`vla demo pretrain-base` builds the shipped base model (sim/assets/demo_base/) the demo starts from.
"""
from __future__ import annotations

import logging
import sys
from typing import Annotated

import tyro

from sim.demo import DemoConfig, PretrainConfig, format_report, pretrain_base, run_demo
from robot.errors import RobotError
from sim.errors import SimError

PRETRAIN = "pretrain-base"


def _logging(folder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(folder / "demo.log", mode="w")])


def main(argv: list[str]) -> int:
    """`vla demo [FLAGS]` runs the demo; `vla demo pretrain-base [FLAGS]` builds its base model."""
    try:
        if argv[:1] == [PRETRAIN]:
            pre = tyro.cli(Annotated[PretrainConfig, tyro.conf.arg(name="")], args=argv[1:],
                           prog=f"vla demo {PRETRAIN}")
            _logging(pre.work)
            print(f"base written to {pretrain_base(pre)}")
            return 0
        config = tyro.cli(Annotated[DemoConfig, tyro.conf.arg(name="")], args=argv, prog="vla demo",
                          description="Collect scripted sim demos, fine-tune a small OpenVLA on them, serve it with "
                                      "`vla serve` on 127.0.0.1 and evaluate it through the ZeroMQ client. "
                                      f"`vla demo {PRETRAIN} --help`: build the base model it starts from.")
        _logging(config.out)
        summary = run_demo(config)
    except (SimError, RobotError) as e:
        print(f"vla demo: {e}", file=sys.stderr)
        return 2
    print(format_report(summary, config.out))
    return 0
