"""`vla sim list|collect|eval`: MuJoCo scenes, scripted demos to RLDS, policy evaluation."""
from __future__ import annotations

import dataclasses
import pathlib

import tyro

from robot.errors import RobotError
from scripts.subcommands import run_subcommands
from sim.errors import SimError


@dataclasses.dataclass(frozen=True)
class List:
    """Print the task names, one per line, with a short description."""

    def run(self) -> None:
        from sim.registry import describe_tasks

        print(describe_tasks())


@dataclasses.dataclass(frozen=True)
class Collect:
    """Collect scripted demos of TASK into an RLDS dataset OUT/sim_<task>/<version>/."""

    task: tyro.conf.Positional[str]  # task name (see `vla sim list`)
    episodes: int  # number of episodes
    out: pathlib.Path  # data dir; the dataset goes to OUT/sim_<task>/1.0.0/
    workers: int = 1  # parallel collection processes
    mix: str = "expert:1.0"  # expert variants and shares, e.g. expert:0.4,noisy:0.3,suboptimal:0.3
    seed: int = 0  # episode i resets with seed + i
    image_size: int = 128  # square images, pixels
    rig: str = "both"  # cameras recorded: third_person, eye_in_hand, both
    max_steps: int | None = None  # episode horizon (default: the task's)
    overwrite: bool = False  # replace an existing dataset

    def run(self) -> None:
        from sim.collect import CollectConfig, collect, parse_mix

        result = collect(CollectConfig(
            task=self.task, episodes=self.episodes, out=self.out, workers=self.workers, mix=parse_mix(self.mix),
            seed=self.seed, image_size=self.image_size, rig=self.rig, max_steps=self.max_steps,
            overwrite=self.overwrite,
        ))
        per = ", ".join(f"{v} {s}/{n}" for v, (s, n) in result.successes.items())
        print(f"wrote {result.path}: {result.episodes} episodes, {result.steps} steps, success {per}, "
              f"{result.wall_s:.1f} s")


@dataclasses.dataclass(frozen=True)
class Eval:
    """Evaluate a policy on TASK (success rate with 95% CI, latency, videos), or --compare summaries."""

    task: tyro.conf.Positional[str | None] = None  # task name (see `vla sim list`)
    policy: str | None = None  # checkpoint folder or tcp://HOST:PORT of `vla serve`
    unnorm_key: str | None = None  # dataset statistics key of the checkpoint
    episodes: int = 20
    max_steps: int | None = None  # episode horizon (default: the task's)
    seed: int = 1_000_000  # episode i resets with seed + i (collection uses 0, 1, ...)
    out: pathlib.Path = pathlib.Path("eval-out")  # folder for summary.json and videos (or the --compare PNG)
    rig: str = "third_person"  # third_person, eye_in_hand, both
    camera_shift: str | None = None  # METRES,DEGREES: move and turn the third-person camera
    table_texture: str | None = None  # wood, checker, gradient, speckle
    distractors: int = 0  # extra objects on the table
    image_size: int = 128
    video: str = "each"  # each: an mp4 per episode; grid: one rollouts.mp4 tiling up to 16 episodes; none
    policy_timeout_s: float = 30.0
    compare: tuple[pathlib.Path, ...] = ()  # summary.json files to plot side by side instead of evaluating
    labels: tuple[str, ...] = ()  # bar labels for --compare (default: folder names)
    vgps: pathlib.Path | None = None  # V-GPS Q-function folder: re-rank K sampled actions each step
    vgps_k: int = 10  # with --vgps: candidates per step
    vgps_beta: float = 0.0  # with --vgps: 0 = argmax of Q, > 0 = softmax(Q / beta)

    def run(self) -> None:
        from sim.evaluate import run_eval_command

        print(run_eval_command(self))


def main(argv: list[str]) -> int:
    return run_subcommands("vla sim", {"list": List, "collect": Collect, "eval": Eval}, (SimError, RobotError), argv)
