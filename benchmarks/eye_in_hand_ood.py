"""Eye-in-hand vs third-person policies under camera shifts, a new table texture and distractors.

Hsu, Kim et al. (ICLR 2022): a wrist camera generalizes better out of distribution when the task is
observable from the hand; a third-person view needs a variational information bottleneck (VIB).
This benchmark checks that on two WidowX tasks: block pick (the wrist sees the block) and block
into bowl (the bowl leaves the wrist view). Per task: scripted demos once, both cameras recorded
(`sim.collect`); four tiny policies fine-tuned from the same init on the same data, steps and seed:
`third_person`, `eye_in_hand`, `both`, `both-vib` (beta chosen from --betas by the in-distribution
validation loss only, never by the test conditions); then evaluation on paired seeds under each
condition of `sim.perturbations.CONDITIONS`. Every rig trains with OpenVLA's image augmentation
unless --no-image-aug: the paper's policies did not converge without augmentation, and here the rigs
that read the wrist camera did worse without it. Writes DIR/eye_in_hand.json as
success[task][rig][condition] = {success_rate, ci, episodes}, a success-vs-shift plot per task, and
the in-distribution bar plot of `vla sim eval --compare`.

    .venv/bin/python benchmarks/eye_in_hand_ood.py --episodes 30 --seed 0 --out /tmp/eih_ood
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from sim.collect import CollectConfig, collect, dataset_name  # noqa: E402
from sim.demo import BASE_SEED, BASE_TASKS  # noqa: E402
from sim.evaluate import CheckpointPolicy, EvalConfig, compare, evaluate  # noqa: E402
from sim.perturbations import CONDITIONS, SHIFT_CONDITIONS  # noqa: E402
from vla.data import Augment, compute_statistics, load_frames  # noqa: E402
from vla.data.batches import augment_image  # noqa: E402
from vla.model.multi_image import RIG_ROLES, set_image_roles  # noqa: E402
from vla.model.normalization import ActionStats, normalize_actions  # noqa: E402
from vla.model.openvla import OpenVLA, preset_tokenizer  # noqa: E402
from vla.model.presets import get_preset  # noqa: E402
from vla.train.loop import LrSchedule  # noqa: E402
from vla.train.step import ActionLoss  # noqa: E402

TASKS = {"pick_task": "widowx-pick-block", "bowl_task": "widowx-block-in-bowl"}
RIGS = ("third_person", "eye_in_hand", "both", "both-vib")
# every policy is evaluated in the same two-camera scene (paired seeds see the same pixels); each reads
# only its roles. A one-camera eye_in_hand scene would refuse a camera shift: it has no camera to move.
SCENE_RIG = "both"
RENDER_SIZE = 112  # pixels the scene renders (demos and evaluation alike) = the model's input side
VAL_FRACTION = 0.15  # demo episodes kept for choosing beta
REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO_BASE = REPO / "sim" / "assets" / "demo_base"  # the demo's pre-trained base (tiny, 112 px; `vla demo`)
BASE_LR = 1e-3  # the demo base's own pre-training rate (`vla demo pretrain-base`)
WARMUP = 20  # optimizer steps of linear warmup before the cosine decay (the demo's schedule)


@dataclasses.dataclass(frozen=True)
class Demos:
    """Demo frames in memory: images by role (uint8 [N, H, W, 3]), normalized actions, episode ids."""

    images: dict[str, np.ndarray]
    actions: np.ndarray
    episode: np.ndarray
    instructions: np.ndarray  # one per frame
    norm_stats: dict

    def take(self, mask: np.ndarray) -> "Demos":
        return Demos({r: x[mask] for r, x in self.images.items()}, self.actions[mask], self.episode[mask],
                     self.instructions[mask], self.norm_stats)

    def views_as_primary(self) -> "Demos":
        """Every frame twice, once per camera, as the one image `primary` of a single-image model."""
        twice = lambda x: np.concatenate([x, x])  # noqa: E731
        return Demos({"primary": np.concatenate([self.images["primary"], self.images["wrist"]])},
                     twice(self.actions), twice(self.episode), twice(self.instructions), self.norm_stats)


def concat(parts: list[Demos]) -> Demos:
    """Several tasks' demos as one set (episode ids kept apart per part)."""
    return Demos({r: np.concatenate([d.images[r] for d in parts]) for r in parts[0].images},
                 np.concatenate([d.actions for d in parts]),
                 np.concatenate([np.char.add(f"{i}/", d.episode.astype(str)) for i, d in enumerate(parts)]),
                 np.concatenate([d.instructions for d in parts]),
                 {k: v for d in parts for k, v in d.norm_stats.items()})


def collect_demos(task: str, episodes: int, data_dir: pathlib.Path, seed: int = 0) -> Demos:
    """Scripted expert demos with both cameras (episode i reset with seed + i), written as RLDS and read back."""
    name = dataset_name(task)
    if not (data_dir / name).exists():
        collect(CollectConfig(task=task, episodes=episodes, out=data_dir, image_size=RENDER_SIZE, rig="both",
                              seed=seed))
    stats = compute_statistics(name, data_dir)
    frames = list(load_frames(name, data_dir))
    action_stats = ActionStats.from_dict(stats["action"], where=name)
    return Demos(
        images={r: np.stack([f["images"][r] for f in frames]) for r in ("primary", "wrist")},
        actions=normalize_actions(np.stack([f["action"] for f in frames]), action_stats).astype(np.float32),
        episode=np.array([f["episode_id"] for f in frames]),
        instructions=np.array([str(f["instruction"]) for f in frames]),
        norm_stats={name: stats},
    )


def build_policy(rig: str, beta: float, image_size: int, norm_stats: dict, seed: int, base: str) -> OpenVLA:
    """The init (`base` folder, or "random": the tiny preset at `image_size`) with the rig's roles (and bottleneck)."""
    if base == "random":
        cfg = dataclasses.replace(get_preset("tiny"), image_sizes=(image_size, image_size))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = OpenVLA(cfg, preset_tokenizer(), norm_stats)
    else:
        model = OpenVLA.from_pretrained(base)
        model.norm_stats = {**model.norm_stats, **norm_stats}
    roles, vib = RIG_ROLES[rig]
    return set_image_roles(model, roles, vib, beta if vib else 0.0, seed=seed)


def pixel_values(model: OpenVLA, demos: Demos, idx: np.ndarray,
                 rng: np.random.Generator | None = None) -> torch.Tensor:
    """[B, 6 * roles, S, S] for frames `idx`, roles in the model's order (`rng`: each image augmented)."""
    def images(role: str) -> list[np.ndarray]:
        if rng is None:
            return list(demos.images[role][idx])
        return [augment_image(img, model.config.image_size, Augment(), rng) for img in demos.images[role][idx]]
    return torch.cat([model.processor.process_images(images(r)) for r in model.config.image_roles], dim=1)


def evaluate_on_centre_crop(model: OpenVLA) -> None:
    """What `vla finetune --image-aug` records: a model trained on random crops sees the centre crop."""
    area = Augment().crop_area
    model.config = dataclasses.replace(model.config, eval_center_crop_area=area)
    model.processor.image_transform = dataclasses.replace(model.processor.image_transform, center_crop_area=area)


def train(model: OpenVLA, demos: Demos, steps: int, batch: int, lr: float, seed: int,
          image_aug: bool = False) -> float:
    """Full fine-tuning with Adam on shuffled frames (same order for every rig); returns the last loss.

    image_aug: OpenVLA's training augmentation (random 0.9-area crop + colour jitter, `vla finetune
    --image-aug`) on every image, each camera drawn independently; the model then evaluates on the centre crop."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LrSchedule(min(WARMUP, steps), steps, "cosine"))
    rng = np.random.default_rng(seed)
    aug_rng = np.random.default_rng([seed, 1 << 22]) if image_aug else None  # apart from the frame order
    torch.manual_seed(seed)
    model.train()
    loss = float("nan")
    step = ActionLoss(model)  # the fine-tuning loss: lm_head on the action positions only (~20x cheaper)
    for _ in range(steps):
        idx = rng.choice(len(demos.actions), batch, replace=False)
        enc = model.processor.encode_training(list(demos.instructions[idx]), demos.actions[idx])
        loss, _, _ = step(pixel_values(model, demos, idx, aug_rng), enc["input_ids"], enc["attention_mask"],
                          enc["labels"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss = float(loss.detach())
    model.eval()
    if image_aug:
        evaluate_on_centre_crop(model)
    return loss


def two_view_base(base: str, out: pathlib.Path, episodes: int, steps: int, batch: int, lr: float, seed: int) -> str:
    """`base` trained on, per frame, both cameras' views of the demo base's own tasks (as `primary`).

    The shipped base saw only the wrist view, so the third-person rigs started from features that had
    never seen the shoulder camera (third_person: 1/30 in distribution after 2400 steps). This base
    sees both views of BASE_TASKS (not the pick task), at the base's seeds; every rig starts from it."""
    folder = out / "two_view_base"
    if (folder / "config.json").is_file():
        print(f"two-view base loaded from {folder}")
        return str(folder)
    t = time.perf_counter()
    demos = concat([collect_demos(task, episodes, out / "base_data", seed=BASE_SEED)
                    for task in BASE_TASKS]).views_as_primary()
    model = OpenVLA.from_pretrained(base)
    model.norm_stats = {**model.norm_stats, **demos.norm_stats}
    loss = train(model, demos, steps, batch, lr, seed)
    model.save_pretrained(folder)
    print(f"two-view base: {steps} steps on {len(demos.actions)} frames (both views of {list(BASE_TASKS)}), "
          f"final loss {loss:.3f} ({time.perf_counter() - t:.0f} s)")
    return str(folder)


@torch.no_grad()
def validation_loss(model: OpenVLA, demos: Demos, batch: int) -> float:
    """Mean action-token cross-entropy (no KL term) over the validation frames, evaluated on mu."""
    losses, step = [], ActionLoss(model)
    for start in range(0, len(demos.actions), batch):
        idx = np.arange(start, min(start + batch, len(demos.actions)))
        enc = model.processor.encode_training(list(demos.instructions[idx]), demos.actions[idx])
        _, logits, targets = step(pixel_values(model, demos, idx), enc["input_ids"], enc["attention_mask"],
                                  enc["labels"])
        losses.append(float(torch.nn.functional.cross_entropy(logits, targets)) * len(idx))
    return sum(losses) / len(demos.actions)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--episodes", type=int, default=30, help="evaluation episodes per cell")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=pathlib.Path, required=True)
    # the demo's recipe (README, "Measured levers"): fewer demos or steps leave a tiny policy blind to the block
    p.add_argument("--demos", type=int, default=600, help="scripted demo episodes per task")
    p.add_argument("--steps", type=int, default=2400, help="optimizer steps per policy")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (warmup, then cosine to 0)")
    p.add_argument("--base", default=str(DEMO_BASE), help="init checkpoint folder, or 'random' (tiny preset)")
    p.add_argument("--image-size", type=int, default=112, help="model input side of a random base")
    p.add_argument("--two-view-steps", type=int, default=0,
                   help="first train --base this many steps on both cameras' views of the base's own tasks "
                        "(0: start every rig from --base as it is)")
    p.add_argument("--two-view-episodes", type=int, default=150, help="demos per base task for --two-view-steps")
    p.add_argument("--image-aug", action=argparse.BooleanOptionalAction, default=True,
                   help="train every rig with OpenVLA's image augmentation (random crop + colour jitter), as "
                        "`vla finetune --image-aug`; over 3 seeds it took the wrist rig from 0.66 to 0.96 and "
                        "both + VIB at the 10 cm shift from 0.13 to 0.68 (README)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on 2 shared cores)")
    p.add_argument("--betas", default="1e-4,1e-3,1e-2,1e-1", help="VIB weights tried for both-vib")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"subset of {list(TASKS)}")
    p.add_argument("--rigs", default=",".join(RIGS), help=f"subset of {list(RIGS)}")
    p.add_argument("--train-only", action="store_true",
                   help="train and save the rigs' policies, evaluate nothing (several processes can share --out; "
                        "a later run without it loads them)")
    p.add_argument("--conditions", default=",".join(CONDITIONS), help=f"subset of {list(CONDITIONS)}")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    betas = [float(b) for b in args.betas.split(",")]
    if args.two_view_steps:
        args.base = two_view_base(args.base, args.out, args.two_view_episodes, args.two_view_steps, args.batch,
                                  BASE_LR, args.seed)
    conditions = args.conditions.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"config": {k: str(v) for k, v in vars(args).items()}, "success": {}, "beta": {},
                     "train_loss": {}, "val_loss": {}, "wall_s": {}}
    earlier = args.out / "eye_in_hand.json"
    if earlier.is_file() and not args.train_only:  # a run for some tasks or rigs keeps the others' results
        kept, rigs = json.loads(earlier.read_text()), args.rigs.split(",")
        for key in ("success", "beta", "train_loss", "val_loss"):
            for t, per_rig in kept.get(key, {}).items():
                results[key][t] = {r: v for r, v in per_rig.items() if t not in args.tasks.split(",") or r not in rigs}
        results["wall_s"].update({t: v for t, v in kept.get("wall_s", {}).items() if t not in args.tasks.split(",")})
    for label in args.tasks.split(","):
        task = TASKS[label]
        t0 = time.perf_counter()
        demos = collect_demos(task, args.demos, args.out / "data")
        val_eps = np.unique(demos.episode)[: max(1, round(VAL_FRACTION * len(np.unique(demos.episode))))]
        is_val = np.isin(demos.episode, val_eps)
        train_set, val_set = demos.take(~is_val), demos.take(is_val)
        print(f"{task}: {len(train_set.actions)} training frames, {len(val_set.actions)} validation frames "
              f"({time.perf_counter() - t0:.0f} s to collect)")
        models = {}
        for rig in args.rigs.split(","):
            saved = args.out / "policies" / label / rig  # a rerun evaluates the policies it already trained
            if (saved / "choice.json").is_file():
                choice = json.loads((saved / "choice.json").read_text())
                recipe = {"image_aug": args.image_aug, "steps": args.steps}
                # folders from before the recipe was recorded: no augmentation, steps unknown
                trained = {"image_aug": choice.get("image_aug", False), "steps": choice.get("steps", args.steps)}
                if trained != recipe:
                    raise SystemExit(f"{saved} was trained with {trained}, this run asks for {recipe}: "
                                     "use another --out, or delete that folder to retrain")
                models[rig] = OpenVLA.from_pretrained(saved)
                for key in ("beta", "val_loss", "train_loss"):
                    results[key].setdefault(label, {})[rig] = choice[key]
                print(f"  {rig:13s} loaded from {saved} (beta {choice['beta']:g})")
                continue
            candidates = betas if RIG_ROLES[rig][1] else [0.0]
            best = None
            for beta in candidates:
                t = time.perf_counter()
                model = build_policy(rig, beta, args.image_size, demos.norm_stats, args.seed, args.base)
                loss = train(model, train_set, args.steps, args.batch, args.lr, args.seed, args.image_aug)
                val = validation_loss(model, val_set, args.batch)
                print(f"  {rig:13s} beta {beta:g}: train loss {loss:.3f}, validation loss {val:.3f} "
                      f"({time.perf_counter() - t:.0f} s)")
                if best is None or val < best[0]:
                    best = (val, beta, model, loss)
            models[rig] = best[2]
            results["beta"].setdefault(label, {})[rig] = best[1]
            results["val_loss"].setdefault(label, {})[rig] = best[0]
            results["train_loss"].setdefault(label, {})[rig] = best[3]
            best[2].save_pretrained(saved)
            choice = {"beta": best[1], "val_loss": best[0], "train_loss": best[3], "image_aug": args.image_aug,
                      "steps": args.steps}
            (saved / "choice.json").write_text(json.dumps(choice))
        if args.train_only:
            continue
        table = results["success"].setdefault(label, {})
        for rig, model in models.items():
            for cond in conditions:
                out = args.out / "eval" / label / rig / cond
                cfg = EvalConfig(task=task, out=out, episodes=args.episodes, seed=1_000_000 + args.seed,
                                 rig=SCENE_RIG, image_size=RENDER_SIZE, video="none",
                                 **CONDITIONS[cond].scene_kwargs())
                s = evaluate(cfg, CheckpointPolicy(model, unnorm_key=dataset_name(task)), policy_name=f"{rig}")
                table.setdefault(rig, {})[cond] = {"success_rate": s["success_rate"], "ci": s["ci95"],
                                                   "episodes": s["episodes"]}
                print(f"  {rig:13s} {cond:11s}: {s['successes']}/{s['episodes']} "
                      f"[{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]")
        results["wall_s"][label] = time.perf_counter() - t0
        (args.out / "eye_in_hand.json").write_text(json.dumps(results, indent=2))
        if "id" in conditions:
            shown = [r for r in RIGS if (args.out / "eval" / label / r / "id" / "summary.json").is_file()]
            compare([args.out / "eval" / label / rig / "id" / "summary.json" for rig in shown],
                    args.out / f"{label}_id.png", labels=shown)
        plot_shifts(table, conditions, args.out / f"{label}_shift.png", task)
    report(results)
    return 0


def plot_shifts(table: dict, conditions: list[str], path: pathlib.Path, task: str) -> None:
    """Success rate vs camera-shift level, one line per rig (95% Wilson intervals as bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [c for c in ("id", *SHIFT_CONDITIONS) if c in conditions]
    xs = [0.0 if c == "id" else CONDITIONS[c].camera_shift.distance_m * 100 for c in levels]
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    for rig, cells in table.items():
        rates = np.array([cells[c]["success_rate"] for c in levels])
        lo = rates - np.array([cells[c]["ci"][0] for c in levels])
        hi = np.array([cells[c]["ci"][1] for c in levels]) - rates
        ax.errorbar(xs, rates, yerr=[lo, hi], marker="o", capsize=3, label=rig)
    ax.set_xlabel("camera shift (cm; 5/10/15 degrees)")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(task, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(results: dict) -> None:
    """The issue's targets, checked on the measured cells (printed, whatever the outcome)."""
    pick = results["success"].get("pick_task")
    if pick and {"shift_3", "id"} <= set(next(iter(pick.values()))):
        r = {rig: {c: v["success_rate"] for c, v in cells.items()} for rig, cells in pick.items()}
        if {"third_person", "eye_in_hand", "both-vib"} <= set(r):  # a --rigs subset checks what it has
            print(f"pick, largest shift: eye_in_hand {r['eye_in_hand']['shift_3']:.2f}, both-vib "
                  f"{r['both-vib']['shift_3']:.2f} vs third_person {r['third_person']['shift_3']:.2f} "
                  "(target: +0.20)")
        if {"both", "both-vib"} <= set(r):
            shifts = [c for c in SHIFT_CONDITIONS if c in r["both"]]
            mean = {rig: np.mean([r[rig][c] for c in shifts]) for rig in ("both", "both-vib")}
            print(f"pick, mean over shifts: both-vib {mean['both-vib']:.2f} vs both {mean['both']:.2f} (target >=)")
        if set(RIGS) <= set(r):
            ids = [r[rig]["id"] for rig in RIGS]
            print(f"pick, in distribution: spread {max(ids) - min(ids):.2f} (target <= 0.10)")
    bowl = results["success"].get("bowl_task")
    if bowl and "id" in bowl.get("eye_in_hand", {}) and "id" in bowl.get("third_person", {}):
        print(f"bowl, in distribution: eye_in_hand {bowl['eye_in_hand']['id']['success_rate']:.2f}, "
              f"third_person {bowl['third_person']['id']['success_rate']:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
