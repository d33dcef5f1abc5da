"""`vla finetune`: fine-tune a policy (LoRA, QLoRA, full) on an RLDS dataset or mixture."""
from __future__ import annotations

import dataclasses
import json
import logging
from typing import Annotated

import tyro

from vla.train import FinetuneConfig, finetune
from vla.train.distributed import launch
from vla.train.loop import SUMMARY, summary_line


@dataclasses.dataclass(frozen=True)
class Finetune:
    """Fine-tune a policy on an RLDS dataset or mixture (--rth: RT-H motion + action queries); writes a checkpoint folder."""

    config: Annotated[FinetuneConfig, tyro.conf.arg(name="")]
    nproc: int = 1  # processes on this machine (torchrun: DDP for LoRA/QLoRA, FSDP for full); 1 = no torchrun

    def run(self) -> int:
        if self.nproc > 1:
            return launch(self.config, self.nproc)
        out = finetune(self.config)
        summary = out / SUMMARY
        if summary.is_file():
            print(summary_line(json.loads(summary.read_text())))
        return 0


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return tyro.cli(Finetune, args=argv, prog="vla finetune").run()
