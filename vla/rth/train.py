"""Training an RT-H model (motion + action queries mixed in every batch) and learning from corrections.

RT-H trains one model on both queries: a share `mix` of each batch is the motion query, whose target
is the motion `lookahead` steps ahead (so that at deployment it can run batched with the action
query of the current step), and the rest is the action query given the step's own motion.
`learn_corrections` retrains only the motion query, on episodes recorded with interventions; steps
where a person (or the oracle) overrode the motion weigh `weight` times more.

`swap` trains a share of the action-query rows on another motion of the vocabulary and that motion's
typical action (`MotionPrototypes`). Without it a small model learns to read the action off the
image alone, since on demonstrations the image predicts the motion: the WidowX benchmark's RT-H
policy kept moving left through 17 steps of an oracle typing "move arm right".
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from vla.model.multi_image import stack_role_images
from vla.model.normalization import normalize_actions, select_stats
from vla.rth.errors import CorrectionsError, MissingMotionsError, MotionSpecError
from vla.rth.label import MOTION_FIELD
from vla.rth.motions import DEFAULT_WORDS, GRIPPER, JOINER, MOTION_AXES, STOP, motion_axes
from vla.rth.query import RTHInfo, Sample, encode_samples, require_rth, set_rth_info, weighted_loss
from vla.train.loop import LrSchedule

logger = logging.getLogger(__name__)

SOURCE_FIELD = "motion_source"  # per-step "policy" | "override" in recorded episodes
OVERRIDE, POLICY = "override", "policy"
CHECKPOINT_FIELD = "rth_checkpoint"  # episode metadata: the checkpoint_id that ran the episode


@dataclasses.dataclass(frozen=True)
class MotionEpisode:
    """An episode with one motion per step (read from a `_rth` or recorded dataset)."""

    images: np.ndarray | Mapping[str, np.ndarray]  # uint8 [T, H, W, 3]; {role: that} for a multi-camera model
    actions: np.ndarray  # float32 [T, A]
    instruction: str
    motions: tuple[str, ...]
    sources: tuple[str, ...] | None = None  # per step, where recorded with interventions
    checkpoint_id: str = ""  # the RT-H checkpoint that ran it, where recorded

    def frame(self, t: int) -> Any:
        """Step t's observation as the model reads it: one image, or {role: image}."""
        if isinstance(self.images, Mapping):
            return {role: frames[t] for role, frames in self.images.items()}
        return self.images[t]


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """A small in-process training run (CPU-sized; `vla finetune --rth` is the large-scale path)."""

    steps: int = 300
    batch_size: int = 8
    lr: float = 3e-4
    mix: float = 0.5  # share of motion-query rows per batch (0 = flat action queries only)
    lookahead: int = 1  # motion-query target: the motion this many steps ahead
    freeze_vision: bool = False  # RT-H froze its ViT; tiny random backbones learn better unfrozen
    seed: int = 0
    warmup_steps: int = 0  # linear ramp to lr, then `schedule` towards 0 at `steps`
    schedule: Literal["constant", "cosine"] = "constant"
    swap: float = 0.0  # share of action-query rows given another motion and its typical action (see module doc)
    swap_compose: float = 0.0  # share of those swaps composed axis by axis (`MotionPrototypes.composed`)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise MotionSpecError(f"need steps >= 1, batch_size >= 1, lr > 0; got {self.steps}, "
                                  f"{self.batch_size}, {self.lr}")
        if self.warmup_steps < 0 or self.schedule not in ("constant", "cosine"):
            raise MotionSpecError(f"need warmup_steps >= 0 and schedule constant|cosine; got {self.warmup_steps}, "
                                  f"{self.schedule!r}")
        check_mix_lookahead(self.mix, self.lookahead)
        check_swap(self.swap, self.mix)
        check_swap_compose(self.swap_compose, self.swap)


def check_swap_compose(compose: float, swap: float) -> None:
    """The share of swapped rows whose motion is composed axis by axis: in [0, 1], and only with swaps."""
    if not 0.0 <= compose <= 1.0 or (compose and not swap):
        raise MotionSpecError(f"--rth-swap-compose {compose} must be in [0, 1] and needs --rth-swap > 0: the share "
                              "of swapped rows whose motion is composed axis by axis")


def check_swap(swap: float, mix: float) -> None:
    """The share of action-query rows trained on a swapped motion: in [0, 1), and only with RT-H rows."""
    if not 0.0 <= swap < 1.0 or (swap > 0 and mix == 0):
        raise MotionSpecError(f"--rth-swap {swap} must be in [0, 1) and needs RT-H training (--rth-mix > 0): "
                              "the share of action-query rows trained on a swapped motion")


@dataclasses.dataclass(frozen=True)
class MotionPrototypes:
    """Each frequent motion's typical normalized action: the per-dim median over the steps labelled with it."""

    motions: tuple[str, ...]
    actions: np.ndarray  # [M, A]
    moves_gripper: np.ndarray  # [M] bool: the motion names a gripper change (else the frame keeps its gripper)
    # per arm axis: {-1/0/+1: median normalized value over the frames whose motion moves the axis that way}
    axis_values: tuple[dict[int, float], ...] = ()
    compose: float = 0.0  # share of draws composed axis by axis instead of taken from the vocabulary

    MIN_STEPS = 5  # rarer motions are not swapped in: their median is noise

    @classmethod
    def of(cls, episodes: Sequence[MotionEpisode], normalized: Sequence[np.ndarray],
           compose: float = 0.0) -> "MotionPrototypes":
        """From labelled episodes and their normalized [T, 7] actions."""
        return cls.from_frames([m for ep in episodes for m in ep.motions], np.concatenate(normalized), compose)

    @classmethod
    def from_frames(cls, motions: Sequence[str], actions: np.ndarray, compose: float = 0.0) -> "MotionPrototypes":
        """From each frame's motion and normalized [N, 7] action.

        compose: share of draws that combine axis words freely ("move arm left and move arm backward"
        even where the demos never did both), each axis at its typical value for that word."""
        if actions.ndim != 2 or actions.shape[1] != GRIPPER + 1:
            raise MotionSpecError(f"--rth-swap needs the 7-dim end-effector action layout (xyz, roll/pitch/yaw, "
                                  f"gripper); got actions of shape {actions.shape}")
        by_motion: dict[str, list[np.ndarray]] = {}
        for m, a in zip(motions, actions):
            by_motion.setdefault(str(m), []).append(a)
        kept = sorted(m for m, rows in by_motion.items() if len(rows) >= cls.MIN_STEPS)
        if len(kept) < 2:
            raise MotionSpecError(f"--rth-swap needs at least 2 motions seen {cls.MIN_STEPS}+ times; these episodes "
                                  f"have {len(kept)}")
        axes = [motion_axes(m) for m in kept]
        return cls(tuple(kept), np.stack([np.median(np.stack(by_motion[m]), axis=0) for m in kept]).astype(np.float32),
                   np.array([a is not None and a["gripper"] != 0 for a in axes]),
                   cls._axis_values(motions, actions) if compose else (), compose)

    @classmethod
    def _axis_values(cls, motions: Sequence[str], actions: np.ndarray) -> tuple[dict[int, float], ...]:
        """Per arm axis, the median normalized value of the frames labelled with each direction (0: unnamed)."""
        signs = np.array([[(a or {}).get(ax, 0) for ax in MOTION_AXES[:GRIPPER]]
                          for a in (motion_axes(m) for m in motions)])
        out = []
        for i in range(GRIPPER):
            values = {}
            for sign in (-1, 0, 1):
                rows = actions[signs[:, i] == sign, i]
                if len(rows) >= cls.MIN_STEPS:
                    values[sign] = float(np.median(rows))
            if 0 not in values:  # an axis that always moves: its rest value is the normalized zero step
                values[0] = float(np.median(actions[:, i]))
            for sign in (-1, 1):  # a direction the demos never took: the mirror of the other about rest
                if sign not in values and -sign in values:  # (normalization is linear; bins clip at +-1)
                    values[sign] = float(np.clip(2 * values[0] - values[-sign], -1.0, 1.0))
            out.append(values)
        return tuple(out)

    def composed(self, motion: str, action: np.ndarray, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        """(a motion with each arm axis' direction drawn on its own, its typical action); a draw whose arm
        axes say what `motion` says is redrawn, up to 10 times."""
        current = motion_axes(motion)
        for _ in range(10):  # redraw when the draw says what the frame's own motion says
            signs = [int(rng.choice(sorted(v))) for v in self.axis_values]
            if current is None or any(current[ax] != s for ax, s in zip(MOTION_AXES, signs)):
                break
        out = np.asarray(action, np.float32).copy()
        out[:GRIPPER] = [v[s] for v, s in zip(self.axis_values, signs)]
        named = [i for i, s in enumerate(signs) if s]
        # largest first, as the labeller joins them: distance of the typical value from the axis' rest value
        named.sort(key=lambda i: -abs(self.axis_values[i][signs[i]] - self.axis_values[i][0]))
        return JOINER.join(DEFAULT_WORDS[MOTION_AXES[i]][int(signs[i] > 0)] for i in named) or STOP, out

    def draw(self, motion: str, action: np.ndarray, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        """(another motion than the frame's `motion`, its typical action with the frame's gripper unless it names one)."""
        if self.compose and rng.random() < self.compose:
            return self.composed(motion, action, rng)
        k = int(rng.integers(len(self.motions)))
        if self.motions[k] == motion:
            k = (k + 1 + int(rng.integers(len(self.motions) - 1))) % len(self.motions)
        out = self.actions[k].copy()
        if not self.moves_gripper[k]:
            out[GRIPPER] = action[GRIPPER]
        return self.motions[k], out

    def swapped(self, ep: MotionEpisode, t: int, normalized: np.ndarray, rng: np.random.Generator) -> "Sample":
        """The action query of step t with another motion and that motion's typical action."""
        return Sample(ep.instruction, *self.draw(ep.motions[t], normalized[t], rng))


def check_mix_lookahead(mix: float, lookahead: int) -> None:
    """RT-H's batch mix and motion look-ahead, as `vla rth train` and `vla finetune --rth` take them."""
    if not 0.0 <= mix <= 1.0:
        raise MotionSpecError(f"--rth-mix {mix} must be in [0, 1]: the share of motion-query samples per batch "
                              "(RT-H: 0.5 of the robot data)")
    if lookahead < 0:
        raise MotionSpecError(f"--rth-lookahead {lookahead} must be >= 0: how many steps ahead the motion query "
                              "is trained (RT-H: 1; 0 = the same step)")


def require_motion_field(name: str, data_dir: str | pathlib.Path, step_features: Any) -> None:
    """MissingMotionsError, saying how to label the dataset, unless its steps carry `language_motion`."""
    if MOTION_FIELD not in step_features:
        raise MissingMotionsError(
            f"dataset {name!r} in {data_dir} has no per-step {MOTION_FIELD!r}, which RT-H training needs; run "
            f"`vla rth label {name} --data-dir {data_dir} --out OUT` first, then train on {name}_rth with "
            "--data-dir OUT (episodes recorded with an RT-H policy carry motions too)")


def read_motion_episodes(name: str, data_dir: str | pathlib.Path,
                         roles: Sequence[str] = ("primary",)) -> list[MotionEpisode]:
    """Episodes of a standardized dataset that carries `language_motion` (and maybe `motion_source`).

    `roles`: the cameras the model reads (`config.image_roles`); one role gives [T, H, W, 3] images,
    several give {role: [T, H, W, 3]}."""
    import tensorflow_datasets as tfds

    from vla.data.rlds import decode_image, open_dataset

    roles = (roles,) if isinstance(roles, str) else tuple(roles)
    source = open_dataset(name, data_dir)
    features = source.builder.info.features["steps"].feature
    require_motion_field(name, data_dir, features)
    missing = [r for r in roles if f"image_{r}" not in features["observation"]]
    if missing:
        raise CorrectionsError(f"dataset {name!r} has no {missing} camera, which the model reads (roles "
                               f"{list(roles)}); its images: {sorted(features['observation'])}")
    ds = source.builder.as_dataset(split="train", decoders={"steps": tfds.decode.SkipDecoding()})
    out = []
    for raw in tfds.as_numpy(ds):
        steps, meta = raw["steps"], raw["episode_metadata"]
        text = lambda xs: tuple(x.decode() if isinstance(x, bytes) else str(x) for x in xs)  # noqa: E731
        ckpt = meta[CHECKPOINT_FIELD] if CHECKPOINT_FIELD in meta else b""
        images = {r: np.stack([decode_image(b) for b in steps["observation"][f"image_{r}"]]) for r in roles}
        out.append(MotionEpisode(
            images=images[roles[0]] if len(roles) == 1 else images,
            actions=np.asarray(steps["action"], np.float32),
            instruction=text(steps["language_instruction"][:1])[0],
            motions=text(steps[MOTION_FIELD]),
            sources=text(steps[SOURCE_FIELD]) if SOURCE_FIELD in steps else None,
            checkpoint_id=ckpt.decode() if isinstance(ckpt, bytes) else str(ckpt)))
    return out


def motion_ahead(motions: Sequence[str], t: int, lookahead: int) -> str:
    """The motion query's target at step t: the motion `lookahead` steps on (the last one near the end)."""
    return motions[min(t + lookahead, len(motions) - 1)]


def rth_samples(ep: MotionEpisode, t: int, normalized: np.ndarray, lookahead: int) -> tuple[Sample, Sample]:
    """(motion-query sample, action-query sample) of step t."""
    return (Sample(ep.instruction, motion_ahead(ep.motions, t, lookahead)),
            Sample(ep.instruction, ep.motions[t], normalized[t]))


def _frames(episodes: Sequence[MotionEpisode]) -> list[tuple[int, int]]:
    return [(e, t) for e, ep in enumerate(episodes) for t in range(len(ep.motions))]


def _optimizer(model: Any, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.freeze_vision:
        model.vision_backbone.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)


def _run(model: Any, batches, settings: TrainSettings, what: str) -> list[float]:
    opt = _optimizer(model, settings)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LrSchedule(settings.warmup_steps, settings.steps, settings.schedule))
    model.train()
    losses = []
    for step, (images, batch) in enumerate(batches):
        loss = weighted_loss(model, stack_role_images(model.processor.process_images, images,
                                                      model.config.image_roles), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step + 1 == settings.steps:
            logger.info("%s step %d/%d loss %.4f", what, step + 1, settings.steps, losses[-1])
    model.eval()
    return losses


def train_policy(model: Any, episodes: Sequence[MotionEpisode], settings: TrainSettings,
                 unnorm_key: str | None = None) -> list[float]:
    """Train in place: RT-H (mix > 0: marks the model RT-H) or flat (mix = 0); returns the losses."""
    if not episodes:
        raise CorrectionsError("no episodes to train on")
    _, stats = select_stats(model.norm_stats, unnorm_key)
    normalized = [normalize_actions(ep.actions, stats) for ep in episodes]
    frames = _frames(episodes)
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    n_motion = int(round(settings.mix * settings.batch_size))
    n_swap = int(round(settings.swap * (settings.batch_size - n_motion)))
    prototypes = MotionPrototypes.of(episodes, normalized, settings.swap_compose) if n_swap else None

    def batches():
        for _ in range(settings.steps):
            picks = [frames[i] for i in rng.integers(len(frames), size=settings.batch_size)]
            images = [episodes[e].frame(t) for e, t in picks]
            if settings.mix == 0:  # the flat OpenVLA query
                batch = model.processor.encode_training([episodes[e].instruction for e, _ in picks],
                                                        np.stack([normalized[e][t] for e, t in picks]))
                batch["weights"] = torch.ones(len(picks))
            else:
                samples = [rth_samples(episodes[e], t, normalized[e], settings.lookahead)[int(i >= n_motion)]
                           if not n_motion <= i < n_motion + n_swap else
                           prototypes.swapped(episodes[e], t, normalized[e], rng)
                           for i, (e, t) in enumerate(picks)]
                batch = encode_samples(model.processor, samples)
            yield images, batch

    losses = _run(model, batches(), settings, "rth" if settings.mix else "flat")
    if settings.mix > 0:
        set_rth_info(model, RTHInfo.new([m for ep in episodes for m in ep.motions],
                                        [ep.instruction for ep in episodes], settings.lookahead, settings.mix))
    return losses


def check_corrections(info: RTHInfo, episodes: Sequence[MotionEpisode]) -> None:
    """Corrections must come from this checkpoint, on its tasks, with recorded motion sources."""
    if not episodes:
        raise CorrectionsError("the corrections dataset has no episodes")
    for i, ep in enumerate(episodes):
        if ep.sources is None:
            raise CorrectionsError(f"correction episode {i} has no per-step {SOURCE_FIELD!r}; record corrections "
                                   "with an intervener (`vla robot run --intervene ...` or OracleIntervener)")
        if ep.checkpoint_id != info.checkpoint_id:
            raise CorrectionsError(f"correction episode {i} was recorded with checkpoint {ep.checkpoint_id!r}, not "
                                   f"with the base {info.checkpoint_id!r}; pass the --base that ran them")
        if not info.knows_task(ep.instruction):
            raise CorrectionsError(f"correction episode {i} is for task {ep.instruction!r}, which the base was not "
                                   f"trained on (its tasks: {list(info.tasks)}); record corrections on those tasks")


def learn_corrections(model: Any, episodes: Sequence[MotionEpisode], settings: TrainSettings,
                      weight: float = 50.0, unnorm_key: str | None = None, anchor: bool = True,
                      replay: Sequence[MotionEpisode] = (), replay_share: float = 0.0) -> list[float]:
    """Retrain the motion query on corrected episodes; overridden steps weigh `weight`.

    The two queries share every weight, so motion-query rows alone also move the action query: on
    the WidowX benchmark 300 such steps took RT-H from 0.51 to 0.01 success. With `anchor`, the
    checkpoint's share of action-query rows (its `mix`) replays the episodes' own executed actions
    (normalized with `unnorm_key`'s statistics), which holds the action query where it was.
    `replay_share` of the motion-query rows come from `replay`, labelled demos the base was trained
    on (DAgger's aggregate: the corrections add to the demos rather than replace them)."""
    info = require_rth(model, "learn-corrections")
    check_corrections(info, episodes)
    if not weight > 0:
        raise MotionSpecError(f"--weight {weight} must be > 0")
    if not 0.0 <= replay_share < 1.0:
        raise MotionSpecError(f"--replay-share {replay_share} must be in [0, 1)")
    if replay_share > 0 and not replay:
        raise CorrectionsError(f"--replay-share {replay_share} needs demo episodes to replay; pass --replay DATASET")
    unknown = sorted({ep.instruction for ep in replay if not info.knows_task(ep.instruction)})
    if replay_share > 0 and unknown:
        raise CorrectionsError(f"replayed demos have tasks the base was not trained on: {unknown} (its tasks: "
                               f"{list(info.tasks)}); replay the dataset the base was trained on")
    normalized = None
    if anchor:
        _, stats = select_stats(model.norm_stats, unnorm_key)
        normalized = [normalize_actions(ep.actions, stats) for ep in episodes]
    n_motion = settings.batch_size if not anchor else max(1, int(round(info.mix * settings.batch_size)))
    n_replay = min(int(round(replay_share * n_motion)), n_motion - 1) if n_motion > 1 else 0  # keep a correction row
    rows, replay_rows = _frames(episodes), _frames(replay)
    overridden = sum(s == OVERRIDE for ep in episodes for s in ep.sources or ())
    logger.info("learning corrections from %d episodes, %d steps, %d overridden%s", len(episodes), len(rows),
                overridden, f"; {n_replay} of {n_motion} motion rows per batch replay {len(replay)} demos"
                if n_replay else "")
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)

    def batches():
        for _ in range(settings.steps):
            picks = [rows[i] for i in rng.integers(len(rows), size=settings.batch_size - n_replay)]
            replayed = [replay_rows[i] for i in rng.integers(len(replay_rows), size=n_replay)] if n_replay else []
            samples, frames = [], []
            for e, t in replayed:  # motion rows on the demos, as the base was trained
                ep = replay[e]
                samples.append(Sample(ep.instruction, motion_ahead(ep.motions, t, info.lookahead)))
                frames.append(ep.frame(t))
            for i, (e, t) in enumerate(picks):
                ep = episodes[e]
                frames.append(ep.frame(t))
                if i + n_replay >= n_motion:  # anchor: the action query on what this checkpoint executed
                    samples.append(Sample(ep.instruction, ep.motions[t], normalized[e][t]))
                    continue
                ahead = min(t + info.lookahead, len(ep.motions) - 1)
                w = weight if ep.sources[ahead] == OVERRIDE else 1.0
                samples.append(Sample(ep.instruction, ep.motions[ahead], weight=w))
            yield frames, encode_samples(model.processor, samples)

    losses = _run(model, batches(), settings, "corrections")
    set_rth_info(model, RTHInfo.new([*info.vocabulary, *(m for ep in episodes for m in ep.motions)], info.tasks,
                                    info.lookahead, info.mix))
    return losses


def learn_corrections_cli(base: pathlib.Path, corrections: pathlib.Path, out: pathlib.Path, weight: float = 50.0,
                          settings: TrainSettings = TrainSettings(), unnorm_key: str | None = None,
                          anchor: bool = True, replay: tuple[str, pathlib.Path] | None = None,
                          replay_share: float = 0.0) -> pathlib.Path:
    """`vla rth learn-corrections`: every dataset under `corrections`, trained into a copy of `base` at `out`.

    `replay`: (dataset, data_dir) of labelled demos whose motion rows make up `replay_share` of them."""
    import vla

    model = vla.OpenVLA.from_pretrained(base)
    require_rth(model, "learn-corrections")
    root = pathlib.Path(corrections)
    beside = replay is not None and pathlib.Path(replay[1]).resolve() == root.resolve()  # demos kept with them
    names = sorted(d.name for d in root.iterdir() if d.is_dir() and any(root.glob(f"{d.name}/*/dataset_info.json"))
                   and not (beside and d.name == replay[0])) if root.is_dir() else []
    if not names:
        raise CorrectionsError(f"{corrections} holds no datasets; pass the folder the corrected episodes were "
                               "recorded into (it holds <name>/<version>/)")
    episodes = [ep for name in names for ep in read_motion_episodes(name, corrections, model.config.image_roles)]
    demos = read_motion_episodes(replay[0], replay[1], model.config.image_roles) if replay else ()
    learn_corrections(model, episodes, settings, weight, unnorm_key, anchor, demos, replay_share)
    model.save_pretrained(out)
    return pathlib.Path(out)


def train_cli(dataset: str, data_dir: pathlib.Path, out: pathlib.Path, base: str = "tiny",
              settings: TrainSettings = TrainSettings()) -> pathlib.Path:
    """`vla rth train`: a preset (random init) or checkpoint trained on a labelled dataset, saved at `out`."""
    import vla
    from vla.data.statistics import compute_statistics

    stats = compute_statistics(dataset, data_dir)
    if pathlib.Path(base).is_dir():
        model = vla.OpenVLA.from_pretrained(base)
        model.norm_stats = {**model.norm_stats, dataset: stats}
    else:
        model = vla.OpenVLA.from_preset(base, norm_stats={dataset: stats}, seed=settings.seed)
    episodes = read_motion_episodes(dataset, data_dir, model.config.image_roles)
    train_policy(model, episodes, settings, unnorm_key=dataset)
    model.save_pretrained(out)
    return pathlib.Path(out)
