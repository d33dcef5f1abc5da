"""`vla rth label|train|learn-corrections`: RT-H language motions from the command line."""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Annotated

import tyro

from scripts.subcommands import run_subcommands
from vla.data.errors import DataError
from vla.rth.errors import RTHError
from vla.rth.label import LabelConfig, Signal


@dataclasses.dataclass(frozen=True)
class Label:
    """Label every step of DATASET with an RT-H motion; write OUT/<DATASET>_rth and print the vocabulary."""

    dataset: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="DATASET")]  # registry entry or converted set
    data_dir: pathlib.Path  # folder holding <DATASET>/<version>/dataset_info.json
    out: pathlib.Path  # data_dir to write <DATASET>_rth/1.0.0/ into
    window: int = 3  # steps looked ahead per label
    threshold: float = 0.3  # fraction of each axis' q01/q99 spread (with --absolute: m, rad, gripper units)
    absolute: bool = False  # read --threshold in the signal's units instead
    signal: Signal = Signal.AUTO  # label actions or proprio poses (auto: actions if end-effector)
    native_actions_are_eef_delta: bool = False  # a converted set's 7-dim actions are end-effector deltas
    overwrite: bool = False  # replace an existing OUT/<DATASET>_rth

    def run(self) -> None:
        from vla.rth.label import label_dataset
        from vla.rth.motions import format_histogram

        config = LabelConfig(self.window, self.threshold, self.absolute, self.signal,
                             self.native_actions_are_eef_delta)
        report = label_dataset(self.dataset, self.data_dir, self.out, config, overwrite=self.overwrite)
        print(format_histogram(report.counts))
        print(f"wrote {report.episodes} episodes, {report.steps} steps to {report.path}")


@dataclasses.dataclass(frozen=True)
class Train:
    """Train a policy on a labelled dataset (<name>_rth): RT-H's two queries (--rth-mix > 0) or flat (0)."""

    dataset: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="DATASET")]  # a dataset with language_motion
    data_dir: pathlib.Path  # folder holding <DATASET>/<version>/
    out: pathlib.Path  # where the checkpoint goes
    base: str = "tiny"  # a preset name (random init) or a checkpoint folder
    rth_mix: float = 0.5  # share of motion-query rows per batch
    rth_lookahead: int = 1  # the motion query learns the motion this many steps ahead
    rth_swap: float = 0.0  # share of action-query rows given another motion and its typical action (follows overrides)
    rth_swap_compose: float = 0.0  # share of those swaps composed axis by axis (motions the demos never had)
    steps: int = 300  # optimizer steps
    batch_size: int = 8
    lr: float = 3e-4
    seed: int = 0

    def run(self) -> None:
        from vla.rth.train import TrainSettings, train_cli

        settings = TrainSettings(steps=self.steps, batch_size=self.batch_size, lr=self.lr, mix=self.rth_mix,
                                 lookahead=self.rth_lookahead, swap=self.rth_swap,
                                 swap_compose=self.rth_swap_compose, seed=self.seed)
        print(f"wrote {train_cli(self.dataset, self.data_dir, self.out, self.base, settings)}")


@dataclasses.dataclass(frozen=True)
class LearnCorrections:
    """Retrain an RT-H checkpoint's motion query on corrected episodes (recorded with an intervener)."""

    base: pathlib.Path  # the RT-H checkpoint that ran the corrected episodes
    corrections: pathlib.Path  # data_dir holding the recorded datasets (<name>/<version>/)
    out: pathlib.Path  # where the retrained checkpoint goes
    # loss weight of overridden steps (others weigh 1). On the tiny WidowX benchmark (seed 0) 50 wrecked the
    # policy (0.60 -> 0.15 success); 1 helped on seed 0 (0.60 -> 0.78) but not on seed 1 (0.73 -> 0.66)
    weight: float = 50.0
    steps: int = 200  # optimizer steps
    batch_size: int = 8
    lr: float = 3e-4
    seed: int = 0
    unnorm_key: str | None = None  # statistics the anchor rows' actions are normalized with (if the base has several)
    anchor: bool = True  # replay the episodes' executed actions on the action query, which shares every weight
    replay: str | None = None  # a labelled demo dataset (`vla rth label` output) to mix into the motion rows
    replay_data_dir: pathlib.Path | None = None  # folder holding --replay (default: --corrections)
    replay_share: float = 0.5  # with --replay: share of motion-query rows drawn from the demos

    def run(self) -> None:
        from vla.rth.train import TrainSettings, learn_corrections_cli

        settings = TrainSettings(steps=self.steps, batch_size=self.batch_size, lr=self.lr, seed=self.seed)
        replay = None if self.replay is None else (self.replay, self.replay_data_dir or self.corrections)
        out = learn_corrections_cli(self.base, self.corrections, self.out, self.weight, settings, self.unnorm_key,
                                    self.anchor, replay, self.replay_share if replay else 0.0)
        print(f"wrote {out}")


def main(argv: list[str]) -> int:
    return run_subcommands("vla rth", {"label": Label, "train": Train, "learn-corrections": LearnCorrections},
                           (RTHError, DataError), argv)
