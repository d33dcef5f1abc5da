"""`make demo`: collect scripted demos, fine-tune a small OpenVLA, serve it, evaluate it over ZeroMQ.

Each stage calls the public library of its owner: `sim.collect.collect` (RLDS), `vla.train.finetune`
(full or LoRA), `vla serve` started as a separate process on 127.0.0.1 (the path a real robot uses),
and `sim.evaluate.evaluate` through `serving.client.PolicyClient` on seeds the demos never used.
Everything lands in one folder (`demo-out/`): data, checkpoint, server log, videos, plot, summary.json.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Literal

from sim.collect import CollectConfig, collect, dataset_name, parse_mix
from sim.errors import SimError
from sim.evaluate import EVAL_SEED, VIDEO_MODES, EvalConfig, compare, evaluate, load_policy
from sim.registry import get_task

log = logging.getLogger(__name__)

REPO = pathlib.Path(__file__).resolve().parents[1]
SERVER_READY = "serving on "  # the line `vla serve` prints first, followed by the address
SUMMARY = "summary.json"
PLOT = "success.png"
SERVE_LOG = "serve.log"
ROLLOUT = "rollout.png"  # frames of one evaluation episode (a success when there is one)
FRAME_STRIP = 5
OUTPUTS = ("data", "base", "checkpoint", "eval", SERVE_LOG, PLOT, ROLLOUT, SUMMARY)  # what run_demo writes into --out
SERVE_STOP_S = 10.0  # SIGTERM, then this long before SIGKILL


# the shipped base (`vla demo pretrain-base`): tiny preset, 112 px wrist camera, pre-trained on the
# WidowX tasks the demo does not evaluate
DEFAULT_BASE = REPO / "sim" / "assets" / "demo_base"
BASE_TASKS = ("widowx-block-in-bowl", "widowx-push-left")
BASE_MIXTURE = "sim_widowx_base"  # datasets/mixtures.toml: the datasets of BASE_TASKS
BASE_SEED = 2_000_000  # base demos use seeds from here: apart from the demo's (0..) and evaluation's (1e6..)
RANDOM_BASE = "random"


class DemoError(SimError):
    """Bad demo settings, or a stage (the policy server) that failed to start."""


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The whole demo: what to collect, how to train, how to evaluate; defaults fit 15 min on 2 CPU cores."""

    task: str = "widowx-pick-block"  # sim task (see `vla sim list`): one object, the fastest to learn
    out: pathlib.Path = pathlib.Path("demo-out")  # everything goes here; an earlier demo's results are replaced
    # scripted demos collected (seeds 0..episodes-1): 100 gave 4/20 and 300 8/20 at 1800 steps (100 fit the
    # training set better but generalised worse); 600 with 2400 steps gave 17/20; collecting 600 costs ~12 s
    episodes: int = 600
    mix: str = "expert:1.0"  # expert variants and shares, e.g. expert:0.8,noisy:0.2
    collect_workers: int = 2  # parallel collection processes
    camera: str = "wrist"  # the scene camera the model sees (sent as role `primary`): wrist = visual servoing
    # base model: a checkpoint folder (default: the shipped one `vla demo pretrain-base` builds), or
    # "random" for a random init of --model at --image-size
    base: str = str(DEFAULT_BASE.relative_to(REPO))
    model: str = "tiny"  # model preset (vla info lists them) of a random base
    image_size: int = 112  # camera image side (pixels); a random base is built at this size too
    mode: Literal["full", "lora"] = "full"  # full: every weight; lora: adapters, merged before serving
    steps: int = 2400  # optimizer steps: 600 left the first action blind to the block (6.5 min at ~200 samples/s)
    batch_size: int = 32
    lr: float = 3e-3  # AdamW learning rate (cosine to 0 after warmup); 1e-3 for 600 steps gave 0/20, 3e-3 gave 2/10
    warmup_steps: int = 20
    eval_episodes: int = 20  # evaluation episodes through the policy server
    eval_seed: int = EVAL_SEED  # first evaluation seed; must be >= episodes (no scene seen in training)
    video: str = "each"  # "each": an mp4 per evaluation episode; "none"
    threads: int = 1  # torch threads per process: 1 avoids oversubscription when 2 cores are shared
    seed: int = 0  # collection seed (episode i: seed + i) and model init / sample order seed
    serve_timeout_s: float = 120.0  # how long `vla serve` may take to load the checkpoint and bind

    def __post_init__(self) -> None:
        positive = {"episodes": self.episodes, "collect_workers": self.collect_workers, "steps": self.steps,
                    "batch_size": self.batch_size, "eval_episodes": self.eval_episodes, "threads": self.threads}
        bad = {k: v for k, v in positive.items() if v < 1}
        if bad:
            raise DemoError(f"these settings must be >= 1: {bad}")
        if not self.lr > 0 or not 0 <= self.warmup_steps <= self.steps:
            raise DemoError(f"need --lr > 0 (got {self.lr}) and 0 <= --warmup-steps <= --steps "
                            f"(got {self.warmup_steps}, steps {self.steps})")
        if self.eval_seed < self.seed + self.episodes:
            raise DemoError(f"--eval-seed {self.eval_seed} overlaps the demo seeds {self.seed}.."
                            f"{self.seed + self.episodes - 1}; pass --eval-seed >= {self.seed + self.episodes} "
                            "so evaluation scenes were never seen in training")
        if self.video not in VIDEO_MODES:
            raise DemoError(f"--video {self.video!r} is not one of {VIDEO_MODES}")
        parse_mix(self.mix)  # raises CollectError naming the bad entry


def primary_rig(camera: str) -> dict[str, str]:
    """The rig that gives the model `camera` as its one image (role `primary`), in demos and evaluation."""
    return {"primary": camera}


def build_base(preset: str, image_size: int, seed: int, path: pathlib.Path) -> pathlib.Path:
    """Random-init `preset` with its image side set to `image_size`, saved as a checkpoint folder."""
    import torch

    from vla.model.openvla import OpenVLA, preset_tokenizer
    from vla.model.presets import get_preset

    config = dataclasses.replace(get_preset(preset), image_sizes=(image_size,) * len(get_preset(preset).image_sizes))
    if config.torch_dtype != "float32":
        raise DemoError(f"preset {preset!r} stores {config.torch_dtype} weights; the CPU demo trains float32 "
                        "presets only (e.g. tiny)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = OpenVLA(config, preset_tokenizer())
    model.save_pretrained(path)
    return path


def resolve_base(cfg: "DemoConfig", work: pathlib.Path) -> pathlib.Path:
    """The base checkpoint folder: the one named, or a random init built into `work`."""
    if cfg.base == RANDOM_BASE:
        return build_base(cfg.model, cfg.image_size, cfg.seed, work)
    path = pathlib.Path(cfg.base)
    path = path if path.is_absolute() else REPO / path
    if not (path / "config.json").is_file():
        hint = ("build it with `vla demo pretrain-base` (about 15 min on 2 cores)" if path == DEFAULT_BASE
                else "pass a checkpoint folder")
        raise DemoError(f"--base {cfg.base}: {path} holds no checkpoint (config.json is absent); {hint}, "
                        f"or pass --base {RANDOM_BASE} to start from a random init")
    return path


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Pre-train the demo's base: scripted demos of the WidowX tasks the demo does not evaluate."""

    out: pathlib.Path = DEFAULT_BASE  # the base checkpoint folder (weights, config, statistics, how it was made)
    work: pathlib.Path = pathlib.Path("demo-out/pretrain")  # data and the training run (checkpoints, logs)
    episodes: int = 150  # demos per task in BASE_TASKS (seeds from BASE_SEED)
    collect_workers: int = 2
    camera: str = "wrist"  # the scene camera the model sees (as role `primary`)
    model: str = "tiny"
    image_size: int = 112
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    threads: int = 1
    seed: int = BASE_SEED


def pretrain_base(cfg: PretrainConfig) -> pathlib.Path:
    """Collect BASE_TASKS demos, train a random `cfg.model` on them, copy the checkpoint files to `cfg.out`."""
    import torch

    from vla.train import FinetuneConfig, OptimSettings, finetune

    torch.set_num_threads(cfg.threads)
    data = pathlib.Path(cfg.work) / "data"
    for task in BASE_TASKS:
        collect(CollectConfig(task=task, episodes=cfg.episodes, out=data, workers=cfg.collect_workers,
                              seed=cfg.seed, image_size=cfg.image_size, rig=primary_rig(cfg.camera), overwrite=True))
    init = build_base(cfg.model, cfg.image_size, cfg.seed, pathlib.Path(cfg.work) / "init")
    run = finetune(FinetuneConfig(
        base=str(init), out=pathlib.Path(cfg.work) / "run", data_dir=data, mixture=BASE_MIXTURE, mode="full",
        max_steps=cfg.steps, batch_size=cfg.batch_size,
        optim=OptimSettings(lr=cfg.lr, warmup_steps=cfg.warmup_steps, schedule="cosine"), seed=cfg.seed,
        heldout_fraction=0.0, eval_every=cfg.steps, checkpoint_every=cfg.steps, overwrite=True, device="cpu"))
    out = pathlib.Path(cfg.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for entry in run.iterdir():  # the model files and the run's record; not checkpoints/ or logs/
        if entry.is_file():
            shutil.copy2(entry, out / entry.name)
    log.info("pre-trained base written to %s", out)
    return out


@contextlib.contextmanager
def served(checkpoint: pathlib.Path, log_path: pathlib.Path, threads: int, timeout_s: float) -> Iterator[str]:
    """Run `vla serve CHECKPOINT --port 0` as a child process; yields its tcp:// address, stops it after."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "scripts.cli", "serve", str(checkpoint), "--host", "127.0.0.1", "--port", "0"]
    with open(log_path, "w") as sink:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    try:
        yield _wait_ready(proc, log_path, timeout_s)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(SERVE_STOP_S)
            except subprocess.TimeoutExpired:
                log.warning("vla serve did not stop %.0f s after SIGTERM; killing it", SERVE_STOP_S)
                proc.kill()
                proc.wait()


def _wait_ready(proc: subprocess.Popen, log_path: pathlib.Path, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            if line.startswith(SERVER_READY):
                return line[len(SERVER_READY):].strip()
        if proc.poll() is not None:
            tail = "\n".join(log_path.read_text().splitlines()[-15:])
            raise DemoError(f"vla serve exited with code {proc.returncode} before serving; its log "
                            f"({log_path}) ends:\n{tail}")
        time.sleep(0.2)
    raise DemoError(f"vla serve printed no address within {timeout_s:.0f} s (log: {log_path}); the machine may be "
                    "overloaded: raise --serve-timeout-s")


def frame_strip(video: pathlib.Path, png: pathlib.Path, frames: int = FRAME_STRIP) -> pathlib.Path:
    """`frames` evenly spaced frames of an mp4, side by side, as one PNG (the README's picture)."""
    import imageio.v3 as iio
    import numpy as np
    from PIL import Image

    decoded = list(iio.imiter(video, plugin="pyav"))
    if not decoded:
        raise DemoError(f"{video} holds no frames; rerun the demo with --video each")
    pick = np.linspace(0, len(decoded) - 1, min(frames, len(decoded))).round().astype(int)
    Image.fromarray(np.concatenate([decoded[i] for i in pick], axis=1)).save(png)
    return png


def _finetune_config(cfg: DemoConfig, base: pathlib.Path, data_dir: pathlib.Path, out: pathlib.Path):
    from vla.train import FinetuneConfig, OptimSettings

    return FinetuneConfig(
        base=str(base), out=out, data_dir=data_dir, dataset=dataset_name(cfg.task), mode=cfg.mode,
        max_steps=cfg.steps, batch_size=cfg.batch_size,
        optim=OptimSettings(lr=cfg.lr, warmup_steps=cfg.warmup_steps, schedule="cosine"),
        seed=cfg.seed, heldout_fraction=0.0,  # the sim evaluation is the held-out test
        eval_every=cfg.steps, checkpoint_every=cfg.steps, merge=cfg.mode == "lora",  # vla serve takes merged folders
        overwrite=True, device="cpu",
    )


def run_demo(cfg: DemoConfig) -> dict:
    """Collect, fine-tune, serve and evaluate; writes `<out>/summary.json` and returns its content."""
    import torch

    from vla.train import finetune
    from vla.train.loop import SUMMARY as TRAIN_SUMMARY

    started = time.perf_counter()
    task = get_task(cfg.task)  # unknown task: fail before any work
    out = pathlib.Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {out} is a file; pass a folder")
    for name in OUTPUTS:  # an earlier demo's results; other files in the folder are left alone
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)  # this process trains; see DemoConfig.threads
    wall: dict[str, float] = {}

    t = time.perf_counter()
    collected = collect(CollectConfig(
        task=cfg.task, episodes=cfg.episodes, out=out / "data", workers=cfg.collect_workers,
        mix=parse_mix(cfg.mix), seed=cfg.seed, image_size=cfg.image_size, rig=primary_rig(cfg.camera)))
    wall["collect"] = time.perf_counter() - t
    log.info("collect: %d episodes, %d steps, expert success %.2f, %.1f s", collected.episodes, collected.steps,
             collected.success_rate, wall["collect"])

    t = time.perf_counter()
    base = resolve_base(cfg, out / "base")
    checkpoint = finetune(_finetune_config(cfg, base, out / "data", out / "checkpoint"))
    wall["finetune"] = time.perf_counter() - t
    train = json.loads((checkpoint / TRAIN_SUMMARY).read_text())

    t = time.perf_counter()
    with served(checkpoint, out / SERVE_LOG, cfg.threads, cfg.serve_timeout_s) as address:
        wall["serve_start"] = time.perf_counter() - t
        t = time.perf_counter()
        policy = load_policy(address, unnorm_key=dataset_name(cfg.task))  # a pre-trained base adds its keys
        try:
            evaluation = evaluate(
                EvalConfig(task=cfg.task, out=out / "eval", episodes=cfg.eval_episodes, seed=cfg.eval_seed,
                           rig=primary_rig(cfg.camera), image_size=cfg.image_size, video=cfg.video),
                policy, policy_name=f"{cfg.mode} {cfg.steps} steps, {cfg.camera} camera, via {address}")
        finally:
            policy.close()
        wall["eval"] = time.perf_counter() - t
    plot = compare([out / "eval" / "summary.json"], out / PLOT, labels=[f"{cfg.model} {cfg.mode}"])
    videos = [str(out / "eval" / e["video"]) for e in evaluation["per_episode"] if e["video"]]
    shown = [out / "eval" / e["video"] for e in sorted(evaluation["per_episode"], key=lambda e: not e["success"])
             if e["video"]]
    rollout = str(frame_strip(shown[0], out / ROLLOUT)) if shown else None
    wall["total"] = time.perf_counter() - started  # the stages plus imports, base loading, plot
    summary = {
        "task": cfg.task,
        "instruction": task.instruction,
        "success_rate": evaluation["success_rate"],
        "successes": evaluation["successes"],
        "episodes": evaluation["episodes"],
        "ci95": evaluation["ci95"],
        "latency_ms": evaluation["latency_ms"],
        "wall_s": wall,
        "demos": {"episodes": collected.episodes, "steps": collected.steps, "expert_success": collected.success_rate,
                  "seeds": [cfg.seed, cfg.seed + cfg.episodes - 1]},
        "eval_seeds": [cfg.eval_seed, cfg.eval_seed + cfg.eval_episodes - 1],
        "train": {k: train[k] for k in ("steps", "samples_per_s", "train_loss", "train_accuracy",
                                        "train_eval_accuracy", "train_eval_l1", "peak_memory_mb")},
        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
        "checkpoint": str(checkpoint),
        "videos": videos,
        "rollout_frames": rollout,
        "plot": str(plot),
        "torch_threads": cfg.threads,
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    log.info("demo done in %.0f s: success %.2f over %d episodes", wall["total"], summary["success_rate"],
             summary["episodes"])
    return summary


def format_report(summary: dict, out: pathlib.Path) -> str:
    """The lines `vla demo` prints at the end."""
    lo, hi = summary["ci95"]
    lat, wall = summary["latency_ms"], summary["wall_s"]
    split = ", ".join(f"{k} {v:.0f} s" for k, v in wall.items() if k != "total")
    lines = [
        f"{summary['task']} ({summary['instruction']!r}): success {summary['success_rate']:.2f} "
        f"(95% CI {lo:.2f}-{hi:.2f}), {summary['successes']}/{summary['episodes']} episodes on unseen seeds "
        f"{summary['eval_seeds'][0]}..{summary['eval_seeds'][1]}",
        f"policy latency through vla serve: mean {lat['mean']:.1f} ms, p50 {lat['p50']:.1f} ms, "
        f"p95 {lat['p95']:.1f} ms",
        f"wall time {wall['total']:.0f} s: {split}",
        f"trained on {summary['demos']['episodes']} demos ({summary['demos']['steps']} steps): "
        f"{summary['train']['steps']} steps at {summary['train']['samples_per_s']:.0f} samples/s, "
        f"final action-token accuracy {summary['train']['train_eval_accuracy']:.3f}",
    ]
    if summary["videos"]:
        lines.append(f"rollout video: {summary['videos'][0]} (+{len(summary['videos']) - 1} more); "
                     f"frames: {summary['rollout_frames']}")
    lines += [f"summary plot: {summary['plot']}", f"summary: {pathlib.Path(out) / SUMMARY}"]
    return "\n".join(lines)
