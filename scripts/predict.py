"""`vla predict CKPT --image PNG --instruction TEXT [--unnorm-key K]`: print one predicted action."""
from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from typing import Literal

import tyro

from vla.errors import VLAError


@dataclasses.dataclass(frozen=True)
class Predict:
    """Predict one action from an OpenVLA checkpoint folder, an image file and an instruction."""

    checkpoint: tyro.conf.Positional[pathlib.Path]  # OpenVLA checkpoint folder
    image: pathlib.Path  # RGB image file (PNG, JPEG)
    instruction: str  # what the robot should do, e.g. "pick up the red block"
    unnorm_key: str | None = None  # dataset statistics to un-normalize with (needed when there are several)
    quantization: Literal["8bit", "4bit"] | None = None  # bitsandbytes weights

    def run(self) -> list[float]:
        from vla.model.tools import predict_from_files
        return predict_from_files(self.checkpoint, self.image, self.instruction, self.unnorm_key,
                                  self.quantization).tolist()


def main(argv: list[str]) -> int:
    """Parse flags, predict, print the action as JSON."""
    cmd = tyro.cli(Predict, args=argv)
    try:
        print(json.dumps(cmd.run()))
    except VLAError as e:
        print(f"vla predict: {e}", file=sys.stderr)
        return 2
    return 0
