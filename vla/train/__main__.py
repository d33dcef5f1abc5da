"""`torchrun --nproc_per_node=N -m vla.train --base ... --dataset ... --out ...`: one process per rank.

`vla finetune --nproc N` starts this through torchrun with `--config-file FILE` (the parsed config).
"""
from __future__ import annotations

import json
import logging
import pathlib
import sys

import tyro

from vla.train.config import FinetuneConfig
from vla.train.loop import finetune


def main(argv: list[str]) -> int:
    """Parse flags (or --config-file) and run this rank's part of the fine-tuning run."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["--config-file"] and len(argv) == 2:
        config = FinetuneConfig.from_json(json.loads(pathlib.Path(argv[1]).read_text()))
    else:
        config = tyro.cli(FinetuneConfig, args=argv, prog="python -m vla.train")
    finetune(config)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
