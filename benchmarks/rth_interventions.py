"""RT-H vs flat on WidowX MuJoCo tasks: offline motion/action accuracy, online success with and
without oracle interventions, and after learning the corrections.

    .venv/bin/python benchmarks/rth_interventions.py --episodes 10 --seed 0 --out /tmp/rth_bench

Flat and RT-H tiny policies are trained from the same demos, steps and seed; every online arm runs
the same evaluation seeds (paired). Writes DIR/rth.json and prints every figure with its peer.
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
from robot import run_episode
from sim.collect import CollectConfig, collect, dataset_name
from sim.config import SceneOptions
from sim.evaluate import paired_bootstrap
from sim.registry import get_task
from vla.data.rlds_writer import write_rlds
from vla.model.normalization import statistics_from_arrays, symmetric_bounds
from vla.rth.intervene import OracleIntervener, RTHPolicy, run_and_record
from vla.rth.label import LabelConfig, label_dataset
from vla.rth.motions import MOTION_AXES, MotionSpec, motion_axes
from vla.rth.query import predict_actions_given, predict_motions, rth_info
from vla.rth.train import TrainSettings, learn_corrections, motion_ahead, read_motion_episodes, train_policy

KEY = "widowx"
RIG = {"primary": "wrist"}  # the demo's camera: the wrist view as the model's one image
DEMO_BASE = pathlib.Path(__file__).resolve().parents[1] / "sim" / "assets" / "demo_base"


@dataclasses.dataclass(frozen=True)
class Args:
    out: pathlib.Path  # working folder; rth.json goes here
    episodes: int = 50  # online evaluation episodes per task and arm
    seed: int = 0
    tasks: tuple[str, ...] = ("widowx-push-left", "widowx-pick-block")
    # the demo's recipe (README, "Measured levers"): fewer demos or steps leave a tiny policy blind to the block
    demos: int = 400  # scripted demos per task (20% held out for the offline figures)
    train_steps: int = 3000  # the flat policy's steps
    rth_train_steps: int = 0  # RT-H's; 0: as many action-query rows as the flat policy sees (train_steps / (1 - mix))
    rth_mix: float = 0.5  # share of motion-query rows in RT-H's batches
    # labelling window (steps per motion). 1 phrases each step's own action, so a typed motion says what
    # the next action does (window 3: 0.67 success and GT-motion L1 0.99x flat; window 1: 0.77 and 0.78x)
    window: int = 1
    # share of RT-H's action-query rows trained on a swapped motion (vla.rth.train): without it the action
    # query ignores typed motions (seed 0: an oracle moved success 0.77 -> 0.75; with 0.5: 0.60 -> 0.79)
    swap: float = 0.5
    # share of those swaps whose motion is composed axis by axis (vla.rth.train.MotionPrototypes.composed):
    # typed or oracle motions the demos never had ("move arm down and move arm left") get trained meanings
    swap_compose: float = 0.0
    # normalize each arm axis over -b..b, b = max(|q01|, |q99|) (vla.model.normalization.symmetric_bounds):
    # the demos never move backward, so OpenVLA's q01..q99 bins cannot say the oracle's "move arm backward"
    symmetric_bounds: bool = False
    # OracleIntervener rules, one online arm each; the first gives rth_intervened and the corrections.
    # "disagree" is the oracle (any axis differs for 2 steps); "conflict" only a wrong direction
    # or a missed gripper change
    oracle_rules: tuple[str, ...] = ("disagree", "conflict")
    correction_steps: int = 300  # optimizer steps of learn-corrections on the intervened episodes
    corrections_per_task: int = 30  # at most this many intervened episodes are learnt from
    batch_size: int = 32
    lr: float = 3e-3  # peak; warmup then cosine to 0
    warmup_steps: int = 20
    correction_lr: float = 3e-4  # a short fine-tune of a trained model: a small constant rate
    # loss weight of overridden steps (`vla rth learn-corrections --weight`, default 50). Measured with swap
    # 0.5: weight 50 took RT-H from 0.60 to 0.15 (seed 0); weight 1 to 0.78 on seed 0, 0.73 to 0.66 on seed 1
    correction_weight: float = 1.0
    image_size: int = 112
    base: str = str(DEMO_BASE)  # init of both policies: a checkpoint folder, or "random" (the tiny preset)
    threads: int = 1


def eval_seeds(seed: int, episodes: int) -> list[int]:
    """The paired evaluation seeds of a run: every arm and task runs these."""
    return [10_000 + seed * 1000 + i for i in range(episodes)]


def split(episodes: list) -> tuple[list, list]:
    """(train, held out) of one task's demos: the first 80% train both policies."""
    cut = max(1, int(round(0.8 * len(episodes))))
    return episodes[:cut], episodes[cut:]


def make_scenes(tasks, seed: int, image_size: int) -> dict:
    """One scene per task, with the demos' camera rig."""
    return {t: get_task(t).make(seed=seed, options=SceneOptions(rig=RIG, image_size=image_size)) for t in tasks}


def rth_successes(scenes: dict, model, seeds: list[int]) -> list[bool]:
    """RT-H alone (no intervener) on every task's scene and seed, task-major."""
    return [run_episode(scene, RTHPolicy(model, unnorm_key=KEY), get_task(name).instruction,
                        get_task(name).max_steps, seed=s, record_frames=False, rig=RIG).success
            for name, scene in scenes.items() for s in seeds]


class FlatPolicy:
    """OpenVLA's one query, as a robot.Policy."""

    def __init__(self, model) -> None:
        self.model = model

    def act(self, obs, instruction):
        return self.model.predict_action(obs.images["primary"], instruction, unnorm_key=KEY)


def offline(flat, rth, held) -> dict:
    """Motion exact match / per-axis accuracy and action L1 of the three action paths on held-out frames."""
    exact, axis_hits, n = 0, np.zeros(len(MOTION_AXES)), 0
    l1 = {"flat": [], "rth_pred": [], "rth_gt": []}
    lookahead = rth_info(rth).lookahead
    for ep in held:
        images, instr = list(ep.images), [ep.instruction] * len(ep.motions)
        pred = predict_motions(rth, images, instr)  # pred[t] answers for step t + lookahead, as trained
        targets = [motion_ahead(ep.motions, t, lookahead) for t in range(len(ep.motions))]
        acted = [pred[max(0, t - lookahead)] for t in range(len(pred))]  # what RTHPolicy acts on at step t
        for p, g in zip(pred, targets):
            exact += p == g
            pa, ga = motion_axes(p), motion_axes(g)
            axis_hits += [pa is not None and pa[a] == ga[a] for a in MOTION_AXES]
            n += 1
        truth = ep.actions
        l1["flat"].append(np.abs(flat.predict_actions(images, instr, unnorm_key=KEY) - truth).mean(1))
        l1["rth_pred"].append(np.abs(predict_actions_given(rth, images, instr, acted, KEY) - truth).mean(1))
        l1["rth_gt"].append(np.abs(predict_actions_given(rth, images, instr, list(ep.motions), KEY) - truth).mean(1))
    return {"motion_accuracy": {"exact": exact / n, "per_axis": dict(zip(MOTION_AXES, (axis_hits / n).tolist())),
                                "frames": n},
            "action_l1": {k: float(np.concatenate(v).mean()) for k, v in l1.items()}}


def online(args: Args, flat, rth, out: pathlib.Path, specs: dict[str, MotionSpec]) -> dict:
    """Success of flat, RT-H, RT-H + oracle, and RT-H after learning the oracle's corrections (paired seeds).

    The oracle labels the expert's next action with `specs[task]`, the thresholds that labelled the
    task's training data: its phrases are the ones the action query learnt (absolute thresholds of
    our own choosing made it phrase motions the model had never seen, and follow them badly)."""
    arms = ["rth_intervened", *(f"rth_intervened_{r}" for r in args.oracle_rules[1:])]
    results = {k: [] for k in ("flat", "rth", *arms, "rth_corrected")}
    interventions, corrections = {arm: [] for arm in arms}, []
    seeds = eval_seeds(args.seed, args.episodes)
    scenes = make_scenes(args.tasks, args.seed, args.image_size)
    try:
        for name, scene in scenes.items():
            task = get_task(name)
            for s in seeds:
                results["flat"].append(run_episode(scene, FlatPolicy(flat), task.instruction, task.max_steps,
                                                   seed=s, record_frames=False, rig=RIG).success)
                results["rth"].append(run_episode(scene, RTHPolicy(rth, unnorm_key=KEY), task.instruction,
                                                  task.max_steps, seed=s, record_frames=False, rig=RIG).success)
                for arm, rule in zip(arms, args.oracle_rules):
                    oracle = OracleIntervener(task.expert(scene, "expert", s).act, specs[name], rule=rule)
                    res, ep = run_and_record(scene, RTHPolicy(rth, intervener=oracle, unnorm_key=KEY),
                                             task.instruction, task.max_steps, seed=s, rig=RIG)
                    results[arm].append(res.success)
                    interventions[arm].append(oracle.interventions)
                    if arm == arms[0] and len([c for c in corrections if c.instruction == task.instruction]
                                              ) < args.corrections_per_task:
                        corrections.append(ep)
            logging.info("%s: flat %s rth %s intervened %s", name, *(np.mean(results[k][-len(seeds):])
                                                                     for k in ("flat", "rth", "rth_intervened")))
        write_rlds(out, "rth_corrections", corrections, overwrite=True)
        episodes = read_motion_episodes("rth_corrections", out)
        corrected = copy.deepcopy(rth)
        learn_corrections(corrected, episodes, TrainSettings(steps=args.correction_steps, batch_size=args.batch_size,
                                                             lr=args.correction_lr, seed=args.seed),
                          weight=args.correction_weight, unnorm_key=KEY)  # anchored: the action query replays what it executed
        results["rth_corrected"] = rth_successes(scenes, corrected, seeds)
    finally:
        for scene in scenes.values():
            scene.close()
    per_task = {name: {k: float(np.mean(v[i * len(seeds):(i + 1) * len(seeds)])) for k, v in results.items()}
                for i, name in enumerate(args.tasks)}
    return {"success": {k: float(np.mean(v)) for k, v in results.items()},
            # paired over the same seeds: 95% interval of the gain over RT-H alone
            "gain_ci": {k: paired_bootstrap(results[k], results["rth"], args.seed) for k in results if k != "rth"},
            "success_per_task": per_task,
            "outcomes": {k: [int(x) for x in v] for k, v in results.items()},  # task-major, seed order
            "episodes_per_arm": len(seeds) * len(args.tasks),
            "oracle_rule": args.oracle_rules[0],
            "interventions_per_episode": float(np.mean(interventions[arms[0]])),
            **{f"interventions_per_episode_{r}": float(np.mean(interventions[a]))
               for a, r in zip(arms[1:], args.oracle_rules[1:])},
            "corrected_episodes": len(corrections)}


def main(args: Args) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    bad = [r for r in args.oracle_rules if r not in OracleIntervener.RULES]
    if bad or not args.oracle_rules:
        raise SystemExit(f"--oracle-rules {list(args.oracle_rules)}: give one or more of {OracleIntervener.RULES}")
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    train, held, specs = [], [], {}
    for name in args.tasks:
        collect(CollectConfig(task=name, episodes=args.demos, out=args.out, seed=args.seed, image_size=args.image_size,
                              rig=RIG, overwrite=True))
        report = label_dataset(dataset_name(name), args.out, args.out,
                               LabelConfig(window=args.window, native_actions_are_eef_delta=True), overwrite=True)
        specs[name] = report.spec
        episodes = read_motion_episodes(report.path.parent.name, args.out)
        task_train, task_held = split(episodes)
        train += task_train
        held += task_held
        print(f"{name}: {report.steps} demo steps, {len(report.counts)} distinct motions")
    stats = statistics_from_arrays(np.concatenate([e.actions for e in train]), mask=[True] * 6 + [False])
    if args.symmetric_bounds:
        stats = symmetric_bounds(stats)
    models = {}
    rth_steps = args.rth_train_steps or int(round(args.train_steps / (1 - args.rth_mix)))
    for kind, mix, steps in (("flat", 0.0, args.train_steps), ("rth", args.rth_mix, rth_steps)):
        saved = args.out / "models" / kind  # a rerun evaluates the policies it already trained
        if (saved / "config.json").is_file():
            models[kind] = vla.OpenVLA.from_pretrained(saved)
            print(f"{kind}: loaded from {saved}")
            continue
        if args.base == "random":
            model = vla.OpenVLA.from_preset("tiny", norm_stats={KEY: stats}, seed=args.seed)
        else:
            model = vla.OpenVLA.from_pretrained(args.base)
            model.norm_stats = {**model.norm_stats, KEY: stats}
        t0 = time.perf_counter()
        losses = train_policy(model, train, TrainSettings(steps=steps, batch_size=args.batch_size,
                                                          lr=args.lr, mix=mix, seed=args.seed,
                                                          swap=args.swap if mix else 0.0,
                                                          swap_compose=args.swap_compose if mix else 0.0,
                                                          warmup_steps=args.warmup_steps, schedule="cosine"), KEY)
        print(f"{kind}: {steps} steps in {time.perf_counter() - t0:.0f} s, final loss "
              f"{np.mean(losses[-20:]):.3f}", flush=True)
        model.save_pretrained(saved)
        models[kind] = model
    result = {"config": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in dataclasses.asdict(args).items()},
              **offline(models["flat"], models["rth"], held), **online(args, models["flat"], models["rth"], args.out, specs)}
    result["wall_s"] = time.perf_counter() - start
    (args.out / "rth.json").write_text(json.dumps(result, indent=1))
    m, a, s = result["motion_accuracy"], result["action_l1"], result["success"]
    print(f"motion exact-match {m['exact']:.3f} on {m['frames']} held-out frames; per axis "
          + ", ".join(f"{k} {v:.2f}" for k, v in m["per_axis"].items()))
    print(f"action L1: flat {a['flat']:.4f}, RT-H predicted motion {a['rth_pred']:.4f} "
          f"(ratio {a['rth_pred'] / a['flat']:.2f}), RT-H ground-truth motion {a['rth_gt']:.4f} "
          f"(ratio {a['rth_gt'] / a['flat']:.2f}; target < 1)")
    print(f"success over {result['episodes_per_arm']} paired episodes per arm: flat {s['flat']:.2f}, RT-H {s['rth']:.2f}, "
          f"RT-H + oracle {s['rth_intervened']:.2f} ({result['interventions_per_episode']:.1f} interventions/episode; "
          f"target >= +0.20 over RT-H), RT-H after corrections {s['rth_corrected']:.2f} (target >= +0.10 over RT-H)")
    for arm, ci in result["gain_ci"].items():
        print(f"{arm} - rth: {s[arm] - s['rth']:+.2f}, paired 95% CI {ci[0]:+.2f}..{ci[1]:+.2f}")
    for rule in args.oracle_rules[1:]:
        print(f"RT-H + oracle, rule {rule}: {s['rth_intervened_' + rule]:.2f} "
              f"({result['interventions_per_episode_' + rule]:.1f} interventions/episode)")
    print(f"wrote {args.out / 'rth.json'} in {result['wall_s']:.0f} s")
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
