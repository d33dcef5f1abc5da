"""`vla vgps train|score`: V-GPS value functions from the command line."""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Annotated, Literal

import tyro

from scripts.subcommands import run_subcommands

@dataclasses.dataclass(frozen=True)
class Train:
    """Train a language-conditioned Q-function offline (Cal-QL or IQL) on an RLDS dataset; save it to OUT."""

    dataset: str  # dataset name under --data-dir (registry entry or our standardized schema)
    data_dir: pathlib.Path  # folder holding <dataset>/<version>/
    out: pathlib.Path  # Q-function folder to write
    algo: Literal["calql", "iql", "cql"] = "calql"  # cql = Cal-QL without the MC lower bound (ablation)
    reward: Literal["last-h", "success"] = "last-h"  # last-h: last H steps of every episode; success: successful ones only
    steps: int = 2000  # gradient steps (V-GPS: 500k-1M on Bridge + fractal)
    batch_size: int = 256
    preset: Literal["tiny", "vgps-resnet34"] = "tiny"  # Q network size
    bounds: str = "data"  # critic action bounds: data (q01/q99) or bridge (+-5 cm, +-0.25 rad)
    # tokenizer: the policy's tokenizer + a learned embedding bag; dataset-embedding: FiLM on the per-step 512-d
    # language_embedding the dataset carries (Bridge: Universal Sentence Encoder); scoring then needs that vector
    language: Literal["tokenizer", "dataset-embedding"] = "tokenizer"
    seed: int = 0
    device: str = "cpu"

    def run(self) -> None:
        from vla.vgps.config import TrainConfig
        from vla.vgps.train import train_from_dataset

        config = TrainConfig(algo=self.algo, reward=self.reward, steps=self.steps, batch_size=self.batch_size,
                             bounds=self.bounds, seed=self.seed, device=self.device)
        train_from_dataset(self.dataset, self.data_dir, self.out, preset=self.preset, config=config,
                           language=self.language)
        print(f"wrote {self.out}")


@dataclasses.dataclass(frozen=True)
class Score:
    """Rank data actions against perturbed ones and compare Q with Monte-Carlo returns on a dataset."""

    q_dir: Annotated[tyro.conf.Positional[pathlib.Path], tyro.conf.arg(metavar="QDIR")]  # Q-function folder
    dataset: str  # dataset name under --data-dir
    data_dir: pathlib.Path
    reward: Literal["last-h", "success"] | None = None  # default: the reward Q was trained with
    perturb_std: float = 0.5  # noise on data actions, in the critic's normalized units
    seed: int = 0

    def run(self) -> None:
        from vla.vgps.evaluate import score_dataset
        from vla.vgps.qfunction import QFunction

        report = score_dataset(QFunction.from_pretrained(self.q_dir), self.dataset, self.data_dir,
                               reward=self.reward, perturb_std=self.perturb_std, seed=self.seed)
        print(json.dumps(dataclasses.asdict(report), indent=1))


def main(argv: list[str]) -> int:
    from vla.data.errors import DataError
    from vla.vgps.errors import VGPSError

    return run_subcommands("vla vgps", {"train": Train, "score": Score}, (VGPSError, DataError), argv)
