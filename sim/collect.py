"""Scripted demonstrations -> an RLDS dataset `sim_<task>` that `vla.data` reads like any other.

Episode i resets the scene with seed `seed + i` and is driven by one expert variant; the mix of
variants is split by largest remainder and shuffled with `seed`. Failed episodes are kept and
flagged (`episode_metadata/success`), as V-GPS needs them. Workers hand episodes back as .npz
files in a scratch folder (no pickled arrays), and the parent writes them in episode order.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import pathlib
import tempfile
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np
from tqdm import tqdm

from robot import run_episode
from sim.config import EXPERT_VARIANTS, SceneOptions
from sim.errors import CollectError
from sim.registry import get_task

log = logging.getLogger(__name__)

VERSION = "1.0.0"


def dataset_name(task: str) -> str:
    """The RLDS dataset name of a task's demos: `sim_<task>` with dashes as underscores."""
    return "sim_" + task.replace("-", "_")


def parse_mix(text: str) -> tuple[tuple[str, float], ...]:
    """Parse "expert:0.4,noisy:0.3,suboptimal:0.3" into ((variant, share), ...) summing to 1."""
    mix = []
    for part in text.split(","):
        name, sep, share = part.strip().partition(":")
        if not sep:
            raise CollectError(f"mix entry {part!r} is not VARIANT:SHARE (e.g. 'expert:0.4,noisy:0.6')")
        if name not in EXPERT_VARIANTS:
            raise CollectError(f"mix variant {name!r} is unknown; variants: {EXPERT_VARIANTS}")
        try:
            value = float(share)
        except ValueError as e:
            raise CollectError(f"mix share {share!r} of {name!r} is not a number") from e
        if not value >= 0:
            raise CollectError(f"mix share of {name!r} must be >= 0, got {share}")
        mix.append((name, value))
    total = sum(v for _, v in mix)
    if len({n for n, _ in mix}) != len(mix) or not math.isclose(total, 1.0, abs_tol=1e-6):
        raise CollectError(f"mix {text!r} must name each variant once with shares summing to 1 (got {total:g})")
    return tuple(mix)


@dataclasses.dataclass(frozen=True)
class CollectConfig:
    """What to collect and where."""

    task: str
    episodes: int
    out: pathlib.Path
    workers: int = 1
    mix: tuple[tuple[str, float], ...] = (("expert", 1.0),)
    seed: int = 0  # episode i resets with seed + i (evaluate on other seeds)
    image_size: int = 128
    rig: str = "both"  # cameras recorded, by role
    max_steps: int | None = None  # None: the task's horizon
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise CollectError(f"--episodes must be >= 1, got {self.episodes}")
        if self.workers < 1:
            raise CollectError(f"--workers must be >= 1, got {self.workers}")
        if self.max_steps is not None and self.max_steps < 1:
            raise CollectError(f"--max-steps must be >= 1, got {self.max_steps}")


@dataclasses.dataclass(frozen=True)
class CollectResult:
    """Where the dataset went and how the experts did."""

    path: pathlib.Path
    episodes: int
    successes: dict[str, tuple[int, int]]  # variant -> (successes, episodes)
    steps: int
    wall_s: float

    @property
    def success_rate(self) -> float:
        """Share of successful episodes over all variants."""
        return sum(s for s, _ in self.successes.values()) / self.episodes


def assign_variants(mix: tuple[tuple[str, float], ...], episodes: int, seed: int) -> list[str]:
    """Variant of each episode: counts by largest remainder, order shuffled by `seed`."""
    exact = [(name, share * episodes) for name, share in mix]
    counts = {name: int(math.floor(x)) for name, x in exact}
    left = episodes - sum(counts.values())
    for name, x in sorted(exact, key=lambda nx: nx[1] - math.floor(nx[1]), reverse=True)[:left]:
        counts[name] += 1
    variants = [name for name, _ in mix for _ in range(counts[name])]
    np.random.default_rng(seed).shuffle(variants)
    return variants


def _run_jobs(cfg: CollectConfig, jobs: list[tuple[int, str]], scratch: str) -> Iterator[tuple[int, str, bool, int]]:
    """Collect episodes `jobs` in this process; yields (index, variant, success, steps) per episode."""
    task = get_task(cfg.task)
    scene = task.make(seed=cfg.seed, options=SceneOptions(rig=cfg.rig, image_size=cfg.image_size))
    horizon = cfg.max_steps or task.max_steps
    try:
        for index, variant in jobs:
            seed = cfg.seed + index
            expert = task.expert(scene, variant, seed)
            res = run_episode(scene, expert, task.instruction, horizon, rig=cfg.rig, seed=seed)
            arrays = {f"image_{role}": np.stack([f[role] for f in res.frames[:-1]]) for role in res.frames[0]}
            np.savez(
                pathlib.Path(scratch) / f"episode_{index:06d}.npz",
                state=np.stack(res.proprio[:-1]).astype(np.float32),
                action=np.stack(res.actions).astype(np.float32),
                success=np.bool_(res.success),
                seed=np.int64(seed),
                mistake=np.str_(getattr(expert, "mistake", None) or ""),
                **arrays,
            )
            yield index, variant, res.success, res.steps
    finally:
        scene.close()


def _worker(cfg: CollectConfig, jobs: list[tuple[int, str]], scratch: str, queue) -> None:
    """Worker process: one scene for all its jobs; reports each episode (or its error) on `queue`."""
    try:
        for item in _run_jobs(cfg, jobs, scratch):
            queue.put(item)
    except Exception as e:  # the parent re-raises it with the worker's message
        queue.put(("error", f"{type(e).__name__}: {e}"))


def _parallel(cfg: CollectConfig, jobs: list[tuple[int, str]], scratch: str) -> Iterator[tuple[int, str, bool, int]]:
    ctx = multiprocessing.get_context("spawn")  # no fork: the parent may hold TensorFlow or GL state
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(cfg, jobs[w :: cfg.workers], scratch, queue), daemon=True)
        for w in range(cfg.workers)
    ]
    for p in procs:
        p.start()
    try:
        for _ in range(len(jobs)):
            item = queue.get()
            if item[0] == "error":
                raise CollectError(f"a collection worker failed: {item[1]}")
            yield item
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()


def _episodes(cfg: CollectConfig, variants: list[str], scratch: str):
    from vla.data.rlds_writer import Episode

    task = get_task(cfg.task)
    for index, variant in enumerate(variants):
        with np.load(pathlib.Path(scratch) / f"episode_{index:06d}.npz", allow_pickle=False) as z:
            images = {k.removeprefix("image_"): z[k] for k in z.files if k.startswith("image_")}
            yield Episode(
                images=images,
                state=z["state"],
                action=z["action"],
                instruction=task.instruction,
                success=bool(z["success"]),
                metadata={
                    "task": cfg.task,
                    "expert": variant,
                    "mistake": str(z["mistake"]),
                    "seed": int(z["seed"]),
                    "file_path": f"{dataset_name(cfg.task)}/episode_{index}",
                },
            )


def collect(cfg: CollectConfig) -> CollectResult:
    """Run the scripted experts and write `<out>/sim_<task>/<version>/`; failures are kept, flagged."""
    from vla.data.rlds_writer import write_rlds

    task = get_task(cfg.task)  # unknown task: fail before any work
    name = dataset_name(cfg.task)
    target = pathlib.Path(cfg.out) / name / VERSION
    if target.exists() and not cfg.overwrite:
        raise CollectError(f"{target} already exists; pass --overwrite or choose another --out")
    variants = assign_variants(cfg.mix, cfg.episodes, cfg.seed)
    jobs = list(enumerate(variants))
    start = time.perf_counter()
    tally: Counter = Counter()
    steps = 0
    with tempfile.TemporaryDirectory(prefix="vla-collect-") as scratch:
        results = _run_jobs(cfg, jobs, scratch) if cfg.workers == 1 else _parallel(cfg, jobs, scratch)
        for _, variant, success, n in tqdm(results, total=len(jobs), desc=f"collect {cfg.task}", unit="ep"):
            tally[(variant, success)] += 1
            steps += n
        path = write_rlds(
            cfg.out,
            name,
            _episodes(cfg, variants, scratch),
            version=VERSION,
            description=f"scripted demos of {cfg.task}: {task.description}; mix {dict(cfg.mix)}",
            overwrite=cfg.overwrite,
        )
    successes = {v: (tally[(v, True)], tally[(v, True)] + tally[(v, False)]) for v, _ in cfg.mix}
    result = CollectResult(path, len(jobs), successes, steps, time.perf_counter() - start)
    log.info("collected %d episodes of %s into %s in %.1f s: %s", len(jobs), cfg.task, path, result.wall_s, successes)
    return result
