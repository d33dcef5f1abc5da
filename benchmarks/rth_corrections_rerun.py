"""Re-run only the "after corrections" arm of a finished `rth_interventions.py` run with other
learn-corrections settings: the same RT-H model, the same recorded correction episodes, the same
paired evaluation seeds; the gain is taken against that run's own RT-H outcomes.

    .venv/bin/python benchmarks/rth_corrections_rerun.py --run /tmp/rth_bench --replay-share 0.5 --tag replay50

Writes RUN/corrections_<tag>.json. With the run's own settings (the defaults here) it reproduces the
run's `rth_corrected` outcomes, which checks that nothing else moved.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import pathlib
import time

import numpy as np
import torch
import tyro

import vla
from sim.collect import dataset_name
from sim.evaluate import paired_bootstrap
from vla.rth.train import TrainSettings, learn_corrections, read_motion_episodes

from rth_interventions import KEY, eval_seeds, make_scenes, rth_successes, split


@dataclasses.dataclass(frozen=True)
class Args:
    run: pathlib.Path  # an rth_interventions.py --out folder (rth.json, models/rth, rth_corrections, demos)
    tag: str = "rerun"  # output: RUN/corrections_<tag>.json
    replay_share: float = 0.0  # share of motion-query rows drawn from the run's training demos
    weight: float | None = None  # loss weight of overridden steps; None: the run's
    steps: int | None = None  # learn-corrections steps; None: the run's
    lr: float | None = None  # None: the run's
    threads: int = 1


def main(args: Args) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    base = json.loads((args.run / "rth.json").read_text())
    cfg = base["config"]
    rth = vla.OpenVLA.from_pretrained(args.run / "models" / "rth")
    corrections = read_motion_episodes("rth_corrections", args.run)
    replay = [ep for name in cfg["tasks"]  # the demos both policies were trained on
              for ep in split(read_motion_episodes(dataset_name(name) + "_rth", args.run))[0]]
    settings = TrainSettings(steps=args.steps or cfg["correction_steps"], batch_size=cfg["batch_size"],
                             lr=args.lr or cfg["correction_lr"], seed=cfg["seed"])
    weight = args.weight if args.weight is not None else cfg["correction_weight"]
    corrected = copy.deepcopy(rth)
    learn_corrections(corrected, corrections, settings, weight=weight, unnorm_key=KEY, replay=replay,
                      replay_share=args.replay_share)
    seeds = eval_seeds(cfg["seed"], cfg["episodes"])
    scenes = make_scenes(cfg["tasks"], cfg["seed"], cfg["image_size"])
    try:
        outcomes = [int(x) for x in rth_successes(scenes, corrected, seeds)]
    finally:
        for scene in scenes.values():
            scene.close()
    rth_outcomes = base["outcomes"]["rth"]
    n = len(seeds)
    result = {"run": str(args.run), "settings": {"replay_share": args.replay_share, "weight": weight,
                                                 "steps": settings.steps, "lr": settings.lr},
              "success": float(np.mean(outcomes)), "rth": float(np.mean(rth_outcomes)),
              "gain": float(np.mean(outcomes) - np.mean(rth_outcomes)),
              "gain_ci": paired_bootstrap(outcomes, rth_outcomes, cfg["seed"]),
              "per_task": {name: float(np.mean(outcomes[i * n:(i + 1) * n])) for i, name in enumerate(cfg["tasks"])},
              "same_as_run": outcomes == base["outcomes"]["rth_corrected"],
              "outcomes": outcomes, "wall_s": time.perf_counter() - start}
    (args.run / f"corrections_{args.tag}.json").write_text(json.dumps(result, indent=1))
    print(f"{args.run}: after corrections ({args.tag}) {result['success']:.2f} vs RT-H {result['rth']:.2f}: gain "
          f"{result['gain']:+.2f} (95% CI {result['gain_ci'][0]:+.2f}..{result['gain_ci'][1]:+.2f}); the run's own "
          f"corrected arm {np.mean(base['outcomes']['rth_corrected']):.2f}; identical outcomes: {result['same_as_run']}")
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
