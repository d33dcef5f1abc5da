"""The evaluation harness: run a policy for N seeded episodes, report success with a 95% interval.

A policy is a checkpoint folder (loaded in process with `vla.OpenVLA.from_pretrained`), a
`tcp://HOST:PORT` address (through `serving.client.PolicyClient`, the path a real robot uses),
or any `robot.Policy` object given to `evaluate`. Episode i resets with seed `seed + i`; the
default seed is far from the collector's (0..N) so demos and evaluation do not share scenes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from robot import NAMED_RIGS, MissingCameraError, Observation, Policy, run_episode
from robot.loop import POLICY_ERROR
from sim.config import CameraShift, SceneOptions
from sim.errors import EvalError
from sim.registry import get_task

log = logging.getLogger(__name__)

EVAL_SEED = 1_000_000  # default first evaluation seed; collection uses 0, 1, 2, ...
Z95 = 1.959963984540054  # two-sided 95% normal quantile
VIDEO_MODES = ("each", "grid", "none")  # an mp4 per episode, one mp4 tiling the episodes, or none
GRID_MAX_EPISODES = 16  # tiles in the grid video (the first episodes), 4 x 4


def paired_bootstrap(a: Any, b: Any, seed: int = 0, resamples: int = 10_000) -> list[float]:
    """95% interval of mean(a - b) for two arms run on the same seeds, resampling the seeds jointly."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise EvalError(f"paired arms need one outcome per shared seed; got shapes {a.shape} and {b.shape}")
    idx = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    diffs = a[idx].mean(1) - b[idx].mean(1)
    return [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))]


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default)."""
    if n <= 0 or not 0 <= successes <= n:
        raise EvalError(f"cannot form an interval from {successes} successes in {n} episodes")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at 0 or n successes the bound is exactly 0 or 1; rounding would leave it a hair off
    lo = 0.0 if successes == 0 else centre - half
    hi = 1.0 if successes == n else centre + half
    return lo, hi


class CheckpointPolicy:
    """A `vla.OpenVLA` model in this process as a `robot.Policy`.

    The model's config may list `image_roles` (multi-camera checkpoints); without it the model
    reads one image, role `primary`.
    """

    def __init__(self, model: Any, unnorm_key: str | None = None) -> None:
        self.model, self.unnorm_key = model, unnorm_key
        self.roles = tuple(getattr(model.config, "image_roles", None) or ("primary",))

    def act(self, obs: Observation, instruction: str) -> np.ndarray:
        """The model's un-normalized action for the images of its roles."""
        missing = [r for r in self.roles if r not in obs.images]
        if missing:
            raise MissingCameraError(
                f"the checkpoint needs images {list(self.roles)}; the rig gave {sorted(obs.images)}. "
                "Pick a --rig that provides them (third_person: primary, eye_in_hand: wrist, both)"
            )
        if self.roles == ("primary",):
            return self.model.predict_action(obs.images["primary"], instruction, unnorm_key=self.unnorm_key)
        images = {r: obs.images[r] for r in self.roles}
        return self.model.predict_action(images=images, instruction=instruction, unnorm_key=self.unnorm_key)


class ClientPolicy:
    """A `serving.client.PolicyClient` with a fixed `unnorm_key`, as a `robot.Policy`."""

    def __init__(self, client: Any, unnorm_key: str | None = None) -> None:
        self.client, self.unnorm_key = client, unnorm_key

    def act(self, obs: Observation, instruction: str) -> Any:
        """The server's reply (its `.action` is the action)."""
        return self.client.act(obs, instruction, unnorm_key=self.unnorm_key)

    def reset(self) -> None:
        """Tell the server a new episode starts."""
        self.client.reset()

    def close(self) -> None:
        self.client.close()


def load_policy(spec: str, unnorm_key: str | None = None, timeout_s: float = 30.0) -> Policy:
    """`tcp://HOST:PORT` -> a client of `vla serve`; a folder -> the checkpoint in process."""
    if spec.startswith("tcp://"):
        from serving.client import PolicyClient
        from serving.errors import ServingError

        client = PolicyClient(spec, timeout_s=timeout_s)
        try:
            client.metadata()  # fail here, with the address, rather than in episode one
        except ServingError as e:
            client.close()
            raise EvalError(f"cannot use the policy server at {spec}: {e}") from e
        return ClientPolicy(client, unnorm_key)
    path = pathlib.Path(spec)
    if not path.is_dir():
        raise EvalError(
            f"--policy {spec!r} is neither a checkpoint folder nor a tcp://HOST:PORT address; "
            "pass the folder `vla finetune` wrote or the address `vla serve` prints"
        )
    from vla import OpenVLA

    return CheckpointPolicy(OpenVLA.from_pretrained(path), unnorm_key)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """One evaluation run."""

    task: str
    out: pathlib.Path
    episodes: int = 20
    seed: int = EVAL_SEED  # episode i resets with seed + i
    max_steps: int | None = None  # None: the task's horizon
    rig: str = "third_person"  # cameras the policy sees (robot.rigs)
    image_size: int = 128
    camera_shift: CameraShift | None = None
    table_texture: str | None = None
    distractors: int = 0
    policy_timeout_s: float = 30.0  # a slower answer stops the episode safely
    video: str = "each"  # "each": an mp4 per episode; "grid": one rollouts.mp4 of up to 16 episodes; "none"

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise EvalError(f"--episodes must be >= 1, got {self.episodes}")
        if self.max_steps is not None and self.max_steps < 1:
            raise EvalError(f"--max-steps must be >= 1, got {self.max_steps}")
        if self.video not in VIDEO_MODES:
            raise EvalError(f"--video {self.video!r} is not one of {VIDEO_MODES}")


def _latency_ms(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"mean": float("nan"), "p50": float("nan"), "p95": float("nan"), "n": 0}
    arr = np.asarray(values) * 1e3
    return {"mean": float(arr.mean()), "p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
            "n": int(arr.size)}


def write_video(path: pathlib.Path, frames: Sequence[dict[str, np.ndarray]], fps: float) -> pathlib.Path:
    """An H.264 mp4 of `frames` (each a role -> image dict, roles side by side)."""
    import imageio.v2 as imageio

    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1, quality=7) as writer:
        for frame in frames:
            writer.append_data(np.concatenate([frame[r] for r in sorted(frame)], axis=1))
    return path


def write_grid_video(path: pathlib.Path, episodes: Sequence[Sequence[dict[str, np.ndarray]]], fps: float) -> pathlib.Path:
    """One mp4 tiling episodes (roles side by side in each tile); finished episodes hold their last frame."""
    tiles = [[np.concatenate([f[r] for r in sorted(f)], axis=1) for f in ep] for ep in episodes]
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    blank = np.zeros_like(tiles[0][0])
    frames = []
    for t in range(max(map(len, tiles))):
        cells = [ep[min(t, len(ep) - 1)] for ep in tiles] + [blank] * (rows * cols - len(tiles))
        frames.append({"grid": np.concatenate(
            [np.concatenate(cells[r * cols : (r + 1) * cols], axis=1) for r in range(rows)], axis=0)})
    return write_video(path, frames, fps)


def evaluate(cfg: EvalConfig, policy: Policy, policy_name: str = "policy") -> dict:
    """Run `policy` on `cfg.task` for `cfg.episodes` episodes; write `summary.json` (+ videos) to `cfg.out`."""
    task = get_task(cfg.task)
    out = pathlib.Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    options = SceneOptions(
        rig=cfg.rig, image_size=cfg.image_size, camera_shift=cfg.camera_shift,
        table_texture=cfg.table_texture, distractors=cfg.distractors,
    )
    horizon = cfg.max_steps or task.max_steps
    scene = task.make(seed=cfg.seed, options=options)
    start = time.perf_counter()
    episodes, latencies, grid = [], [], []
    try:
        for i in tqdm(range(cfg.episodes), desc=f"eval {cfg.task}", unit="ep"):
            seed = cfg.seed + i
            reset = getattr(policy, "reset", None)
            if callable(reset):
                reset()
            res = run_episode(
                scene, policy, task.instruction, horizon, rig=cfg.rig, seed=seed,
                policy_timeout_s=cfg.policy_timeout_s, record_frames=cfg.video != "none",
            )
            latencies.extend(res.policy_latency_s)
            video = None
            if cfg.video == "each":
                video = write_video(out / f"episode_{i:03d}.mp4", res.frames, scene.spec.control_hz).name
            elif cfg.video == "grid" and len(grid) < GRID_MAX_EPISODES:
                grid.append(res.frames)
                video = "rollouts.mp4"
            episodes.append({
                "episode": i, "seed": seed, "success": res.success, "steps": res.steps, "reason": res.reason,
                "error": res.error, "latency_ms": _latency_ms(res.policy_latency_s), "video": video,
            })
        if grid:
            write_grid_video(out / "rollouts.mp4", grid, scene.spec.control_hz)
    finally:
        scene.close()
    successes = sum(e["success"] for e in episodes)
    lo, hi = wilson_interval(successes, len(episodes))
    errors = [e for e in episodes if e["reason"] == POLICY_ERROR]
    summary = {
        "task": cfg.task,
        "instruction": task.instruction,
        "policy": policy_name,
        "episodes": len(episodes),
        "successes": successes,
        "success_rate": successes / len(episodes),
        "ci95": [lo, hi],
        "mean_length": float(np.mean([e["steps"] for e in episodes])),
        "latency_ms": _latency_ms(latencies),
        "seed": cfg.seed,
        "max_steps": horizon,
        "rig": cfg.rig,
        "image_size": cfg.image_size,
        "camera_shift": None if cfg.camera_shift is None else dataclasses.asdict(cfg.camera_shift),
        "table_texture": cfg.table_texture,
        "distractors": cfg.distractors,
        "wall_s": time.perf_counter() - start,
        # episodes the policy stopped by raising: counted as failures, and said (see format_summary)
        "policy_errors": len(errors),
        "per_episode": episodes,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if errors and len(errors) == len(episodes):  # nothing was evaluated: a broken policy, not a 0% one
        raise EvalError(f"the policy raised in every episode, so {cfg.task} was not evaluated; the first: "
                        f"{errors[0]['error']} (fix the policy or its options and rerun; {out / 'summary.json'} "
                        "keeps each episode's error)")
    log.info("%s on %s: success %.2f [%.2f, %.2f] over %d episodes", policy_name, cfg.task,
             summary["success_rate"], lo, hi, len(episodes))
    return summary


def compare(summaries: Sequence[pathlib.Path], out: pathlib.Path, labels: Sequence[str] | None = None) -> pathlib.Path:
    """A bar plot PNG of success rates with their 95% intervals, one bar per summary.json."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display here
    import matplotlib.pyplot as plt

    if len(summaries) < 1:
        raise EvalError("--compare needs at least one summary.json")
    if labels is not None and len(labels) != len(summaries):
        raise EvalError(f"{len(labels)} labels for {len(summaries)} summaries; give one label per file")
    rows = []
    for path in summaries:
        path = pathlib.Path(path)
        try:
            data = json.loads(path.read_text())
            rows.append((float(data["success_rate"]), [float(v) for v in data["ci95"]], data))
        except FileNotFoundError as e:
            raise EvalError(f"{path} does not exist; pass summary.json files written by `vla sim eval`") from e
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise EvalError(f"{path} is not a `vla sim eval` summary.json ({e!r})") from e
    names = list(labels) if labels else [f"{p.parent.name or p.stem}" for p in map(pathlib.Path, summaries)]
    rates = [r for r, _, _ in rows]
    err = np.array([[r - ci[0] for r, ci, _ in rows], [ci[1] - r for r, ci, _ in rows]])
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(rows), 3.2), dpi=120)
    ax.bar(names, rates, yerr=err, capsize=4, color="#4477aa")
    for x, (r, _, d) in enumerate(rows):
        ax.text(x, 0.02, f"{r:.2f}\nn={d['episodes']}", ha="center", va="bottom", color="white", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate (95% Wilson CI)")
    tasks = sorted({d["task"] for _, _, d in rows})
    ax.set_title(", ".join(tasks), fontsize=9)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right", fontsize=8)
    fig.tight_layout()
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def with_vgps(loaded: Policy, q_dir: pathlib.Path, k: int, beta: float, unnorm_key: str | None) -> Policy:
    """`loaded` re-ranked by V-GPS: K samples from the checkpoint (or the server), Q picks one."""
    from vla.vgps import QFunction, ValueGuidedPolicy
    from vla.vgps.errors import VGPSError

    inner = loaded.model if isinstance(loaded, CheckpointPolicy) else loaded.client
    try:
        return ValueGuidedPolicy(inner, QFunction.from_pretrained(q_dir), k=k, beta=beta, unnorm_key=unnorm_key)
    except VGPSError as e:
        raise EvalError(f"--vgps {q_dir}: {e}") from e


def evaluate_spec(cfg: EvalConfig, policy: str, unnorm_key: str | None = None, vgps: pathlib.Path | None = None,
                  vgps_k: int = 10, vgps_beta: float = 0.0) -> dict:
    """Load `policy` (checkpoint folder or tcp://HOST:PORT), optionally V-GPS re-ranked, and `evaluate` it."""
    get_task(cfg.task)  # unknown task: fail before loading a model
    loaded = load_policy(policy, unnorm_key, cfg.policy_timeout_s)
    roles = getattr(loaded, "roles", ())
    given = NAMED_RIGS.get(cfg.rig, roles)  # a custom rig is checked per observation instead
    if not set(roles) <= set(given):
        raise EvalError(
            f"the checkpoint reads images {list(roles)} but rig {cfg.rig!r} gives {list(given)}; "
            f"pick a rig that has them: {[n for n, r in NAMED_RIGS.items() if set(roles) <= set(r)]}"
        )
    try:
        if vgps is None:
            return evaluate(cfg, loaded, policy_name=policy)
        guided = with_vgps(loaded, vgps, vgps_k, vgps_beta, unnorm_key)
        return evaluate(cfg, guided, policy_name=f"{policy} + V-GPS {vgps} (K={vgps_k}, beta={vgps_beta})")
    finally:
        close = getattr(loaded, "close", None)
        if callable(close):
            close()


def format_summary(summary: dict, out: pathlib.Path) -> str:
    """The lines `vla sim eval` prints."""
    lo, hi = summary["ci95"]
    lat = summary["latency_ms"]
    lines = [
        f"{summary['task']}: success {summary['success_rate']:.2f} (95% CI {lo:.2f}-{hi:.2f}), "
        f"{summary['successes']}/{summary['episodes']} episodes, mean length {summary['mean_length']:.1f} steps",
        f"policy latency: mean {lat['mean']:.1f} ms, p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms",
        f"summary: {pathlib.Path(out) / 'summary.json'}",
    ]
    errors = [e for e in summary["per_episode"] if e["reason"] == POLICY_ERROR]
    if errors:
        lines.append(f"WARNING: {len(errors)} of {summary['episodes']} episodes stopped because the policy raised "
                     f"(counted as failures); the first, episode {errors[0]['episode']}: {errors[0]['error']}")
    videos = sorted({e["video"] for e in summary["per_episode"] if e["video"]})
    if len(videos) == 1:
        lines.append(f"video: {pathlib.Path(out) / videos[0]}")
    elif videos:
        lines.append(f"videos: {pathlib.Path(out) / videos[0]} (+{len(videos) - 1} more)")
    return "\n".join(lines)


def run_eval_command(args: Any) -> str:
    """What `vla sim eval` does with its parsed arguments: compare summaries, or evaluate a policy."""
    if args.compare:
        out = pathlib.Path(args.out)
        png = out if out.suffix == ".png" else out / "compare.png"
        return f"wrote {compare(args.compare, png, args.labels or None)}"
    if args.task is None or args.policy is None:
        raise EvalError("give TASK and --policy CHECKPOINT|tcp://HOST:PORT, or --compare A.json B.json")
    cfg = EvalConfig(
        task=args.task, out=args.out, episodes=args.episodes, seed=args.seed, max_steps=args.max_steps,
        rig=args.rig, image_size=args.image_size,
        camera_shift=None if args.camera_shift is None else CameraShift.parse(args.camera_shift),
        table_texture=args.table_texture, distractors=args.distractors,
        policy_timeout_s=args.policy_timeout_s, video=args.video,
    )
    return format_summary(evaluate_spec(cfg, args.policy, args.unnorm_key, getattr(args, "vgps", None),
                                        getattr(args, "vgps_k", 10), getattr(args, "vgps_beta", 0.0)), args.out)
