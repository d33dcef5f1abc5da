"""`finetune(config) -> path`: the training loop, on one process or under torchrun.

Reads top to bottom: output folder, data, model, wrapping, optimizer and schedule, resume, the step
loop (micro-batches, clipping, NaN guard, logging, checkpoints, held-out evaluation), final output.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import pathlib
import resource
import shutil
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from vla.train import checkpoint
from vla.train.config import FinetuneConfig
from vla.train.data import AugmentSeed, Frames, SampleOrder, TrainData, collate, load_train_data
from vla.train.distributed import DistContext, no_grad_sync, wrap
from vla.train.errors import NonFiniteLossError, OutputExistsError, ResumeError, TrainOutOfMemoryError
from vla.train.logs import RunLog
from vla.train.modes import check_action_dim, load_base, set_trainable, write_output
from vla.train.step import ActionLoss, ActionMetrics

log = logging.getLogger(__name__)

RUN_CONFIG = "finetune_config.json"
SUMMARY = "train_summary.json"
FINAL_TMP = ".tmp-final"


@dataclasses.dataclass(frozen=True)
class LrSchedule:
    """Multiplier of the base learning rate at optimizer step `s` (0-based): warmup, then the schedule."""

    warmup: int
    total: int
    kind: str

    def __call__(self, s: int) -> float:
        if s < self.warmup:
            return (s + 1) / self.warmup
        progress = (s - self.warmup) / max(self.total - self.warmup, 1)
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.kind == "linear":
            return 1.0 - progress
        return 1.0


def prepare_output(config: FinetuneConfig, ctx: DistContext) -> None:
    """Refuse an existing folder unless --resume (same settings) or --overwrite; record the settings."""
    out = config.out
    if ctx.is_main:
        if out.exists() and not out.is_dir():
            raise OutputExistsError(f"--out {out} is a file; pass a folder path")
        used = out.is_dir() and any(out.iterdir())
        if config.resume:
            if not (out / RUN_CONFIG).is_file():
                raise ResumeError(f"--resume: {out} holds no fine-tuning run ({RUN_CONFIG} is absent); "
                                  "drop --resume to start one")
            before = json.loads((out / RUN_CONFIG).read_text())["fingerprint"]
            now = config.fingerprint()
            diff = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
            if diff:
                raise ResumeError(f"--resume: settings {diff} differ from the run in {out} "
                                  f"(was {[before.get(k) for k in diff]}, now {[now.get(k) for k in diff]}); "
                                  "resume with the same settings or start a new --out")
        elif used and not config.overwrite:
            raise OutputExistsError(f"--out {out} exists and is not empty; pass --resume to continue the run in it, "
                                    "--overwrite to replace it, or another --out")
        elif used:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        if not config.resume:
            record = {"fingerprint": config.fingerprint(), "config": config.to_json()}
            (out / RUN_CONFIG).write_text(json.dumps(record, indent=2) + "\n")
    ctx.barrier()


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked, or on "auto" where the GPU supports bf16; otherwise float32."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


@contextlib.contextmanager
def oom_advice(config: FinetuneConfig, micro: int) -> Iterator[None]:
    """Turn an out-of-memory failure into advice: QLoRA, a smaller micro-batch with accumulation."""
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
        text = str(e)
        if not isinstance(e, (torch.OutOfMemoryError, MemoryError)) and not any(
                s in text for s in ("out of memory", "can't allocate memory", "Unable to allocate")):
            raise
        hint = "--mode qlora (4-bit base) or " if config.mode != "qlora" else ""
        raise TrainOutOfMemoryError(
            f"out of memory with a micro-batch of {micro} samples in --mode {config.mode} ({text.splitlines()[0]}); "
            f"use {hint}a smaller micro-batch: keep --batch-size {config.batch_size} and raise --grad-accum "
            f"(now {config.grad_accum}), or lower --batch-size") from e


def _sums(ctx: DistContext, m: ActionMetrics) -> ActionMetrics:
    loss, correct, l1, tokens = ctx.all_sum([m.loss_sum, m.correct, m.l1_sum, m.tokens])
    return ActionMetrics(loss, int(correct), l1, int(tokens))


class Evaluator:
    """Accuracy and L1 on a fixed sample of frames; every rank runs the same number of forwards."""

    def __init__(self, frames: Frames, samples: int, seed: int, ctx: DistContext, micro: int, name: str) -> None:
        n = min(samples, len(frames)) // ctx.world_size * ctx.world_size
        self.name = name
        pick = np.sort(np.random.default_rng([seed, 7]).permutation(len(frames))[:n])
        part = np.array_split(pick, ctx.world_size)[ctx.rank]
        self.chunks = np.array_split(part, max(math.ceil(len(part) / micro), 1)) if n else []
        self.frames, self.ctx = frames, ctx

    @torch.no_grad()
    def __call__(self, wrapped: torch.nn.Module, module: ActionLoss, amp: Any) -> dict[str, float]:
        total = ActionMetrics(0.0, 0, 0.0, 0)
        wrapped.eval()
        try:
            for idx in self.chunks:
                with amp:
                    out = wrapped(**collate(module.vla.processor, self.frames.take(idx)))
                total += module.metrics(*out)
        finally:
            wrapped.train()
        total = _sums(self.ctx, total)
        return {f"{self.name}/loss": total.loss, f"{self.name}/accuracy": total.accuracy, f"{self.name}/l1": total.l1}


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def finetune(config: FinetuneConfig) -> pathlib.Path:
    """Fine-tune `config.base` on the dataset/mixture; returns the folder `OpenVLA.from_pretrained` loads."""
    ctx = DistContext.from_env(config.device)
    try:
        return _run(config, ctx)
    finally:
        ctx.close()


def _run(config: FinetuneConfig, ctx: DistContext) -> pathlib.Path:
    out = config.out
    prepare_output(config, ctx)
    micro = config.micro_batch(ctx.world_size)
    data: TrainData = load_train_data(config.datasets_arg, config.data_dir, split=config.split,
                                      role=config.cameras()[0], heldout_fraction=config.heldout_fraction,
                                      seed=config.seed, mixtures_file=config.mixtures_file,
                                      motion_lookahead=config.rth_lookahead if config.rth else None,
                                      symmetric_action_bounds=config.symmetric_action_bounds)
    torch.manual_seed(config.seed)  # LoRA init: identical on every rank
    model = load_base(config, ctx.device)
    check_action_dim(model, data.action_dim, config.allow_new_action_dim)
    set_trainable(model, config)
    module = _loss_module(config, model).to(ctx.device).train()
    wrapped = wrap(module, config.mode, ctx)
    params = [p for p in wrapped.parameters() if p.requires_grad]
    o = config.optim
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LrSchedule(o.warmup_steps, config.max_steps, o.schedule))
    torch.manual_seed(config.seed + 1 + ctx.rank)  # dropout stream of this rank
    start = checkpoint.restore(out, wrapped, optimizer, scheduler, ctx) if config.resume else 0
    stop = config.stop_at_step or config.max_steps
    if start > stop:
        raise ResumeError(f"the last checkpoint in {out} is at step {start}, past --stop-at-step {stop}")

    order = SampleOrder(data.train.weights, config.seed, config.batch_size)
    motion_rows = _motion_rows(config)
    swap = _motion_swap(config, data)
    amp = autocast(config.precision, ctx.device)
    evals = [Evaluator(data.train, config.eval_samples, config.seed, ctx, micro, "train_eval")]
    if data.heldout is not None:
        evals.append(Evaluator(data.heldout, config.eval_samples, config.seed, ctx, micro, "heldout"))
    run_log = RunLog(out, start, config.max_steps, progress=config.progress and ctx.is_main,
                     wandb_project=config.wandb_project, config=config.fingerprint()) if ctx.is_main else None
    last_ckpt = checkpoint.checkpoint_dirs(out)[-1][1] if start else None
    t_begin, evaluated, train = time.perf_counter(), {}, ActionMetrics(0.0, 0, 0.0, 0)
    try:
        for step in range(start, stop):
            t0 = time.perf_counter()
            parts = order.micro_batches(step, ctx.rank, ctx.world_size, config.grad_accum)
            positions = order.micro_positions(ctx.rank, ctx.world_size, config.grad_accum)
            train = ActionMetrics(0.0, 0, 0.0, 0)
            with oom_advice(config, micro):
                for i, idx in enumerate(parts):
                    aug = (AugmentSeed(config.seed, step, tuple(int(i) for i in idx), model.config.image_sizes[0])
                           if config.image_aug else None)
                    frames = data.train.take(idx)
                    swaps = None if swap is None else swap.draws(step, positions[i], frames.motions, frames.actions)
                    batch = collate(model.processor, frames, aug,
                                    None if motion_rows is None else motion_rows[positions[i]], swaps)
                    with no_grad_sync(wrapped, skip=i < len(parts) - 1):
                        with amp:
                            loss, logits, targets = wrapped(**batch)
                        bad = ctx.all_sum([0.0 if torch.isfinite(loss) else 1.0])[0]
                        if bad:
                            raise NonFiniteLossError(
                                f"the loss is {float(loss.detach())} at step {step + 1} (micro-batch {i} on rank {ctx.rank}: "
                                f"frames {idx.tolist()}, first instruction {data.train.instructions[idx[0]]!r}); "
                                f"stopped before updating the weights. The last good checkpoint "
                                f"({last_ckpt or 'none yet'}) is intact; lower --optim.lr, keep "
                                "--optim.max-grad-norm > 0, or check those frames' actions")
                        (loss / len(parts)).backward()
                    train += module.metrics(loss, logits, targets)
                grad_norm = (torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm) if o.max_grad_norm > 0
                             else None)
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            train = _sums(ctx, train)
            done = step + 1
            if run_log is not None:
                scalars = {"train/loss": train.loss, "train/accuracy": train.accuracy, "train/l1": train.l1,
                           "train/lr": lr, "time/step_s": time.perf_counter() - t0}
                if module.last_kl is not None:
                    scalars["train/vib_kl"] = module.last_kl
                if grad_norm is not None:
                    scalars["train/grad_norm"] = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor")
                                                       else grad_norm)
                run_log.step(done, scalars, write_scalars=done % config.log_every == 0 or done == stop)
            if done % config.checkpoint_every == 0 or done == stop:
                last_ckpt = checkpoint.save(out, done, wrapped, optimizer, scheduler, ctx, config.keep_checkpoints)
            if done % config.eval_every == 0 or done == config.max_steps:
                evaluated = {k: v for ev in evals for k, v in ev(wrapped, module, amp).items()}
                if run_log is not None:
                    run_log.evaluation(done, evaluated)
    finally:
        if run_log is not None:
            run_log.close()
    wall = time.perf_counter() - t_begin
    if stop < config.max_steps:
        log.info("stopped at step %d of %d as asked; continue with --resume", stop, config.max_steps)
        return out
    if not evaluated:  # a resumed run that had no step left still reports where it stands
        evaluated = {k: v for ev in evals for k, v in ev(wrapped, module, amp).items()}
    trained = _gather_model(config, wrapped, module, ctx)
    if ctx.is_main:
        _write_final(out, config, trained, data)
        summary = {"steps": config.max_steps, "session_steps": stop - start, "wall_s": wall,
                   "samples_per_s": (stop - start) * config.batch_size / wall if wall > 0 else float("nan"),
                   "peak_memory_mb": _peak_memory_mb(ctx.device), "mode": config.mode,
                   "train_loss": train.loss if train.tokens else None,  # the last step's batch
                   "train_accuracy": train.accuracy if train.tokens else None, "train_l1": train.l1 if train.tokens else None,
                   **{k.replace("/", "_"): v for k, v in evaluated.items()},
                   "episodes": {k: list(v) for k, v in data.episodes.items()}, "output": str(out)}
        (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
        log.info("finetune done: %s", summary_line(summary))
    ctx.barrier()
    return out


def summary_line(s: dict[str, Any]) -> str:
    """One line a person reads at the end of a run."""
    held = (f", held-out acc {s['heldout_accuracy']:.3f} L1 {s['heldout_l1']:.4f}" if "heldout_accuracy" in s
            else ", no held-out episodes")
    return (f"{s['mode']} {s['steps']} steps, {s['samples_per_s']:.1f} samples/s, peak {s['peak_memory_mb']:.0f} MB, "
            f"train loss {s['train_eval_loss']:.4f} acc {s['train_eval_accuracy']:.3f} L1 {s['train_eval_l1']:.4f}"
            f"{held} -> {s['output']}")


def _loss_module(config: FinetuneConfig, model) -> ActionLoss:
    """Action tokens only, or (--rth) both RT-H queries' answers."""
    if not config.rth:
        return ActionLoss(model)
    from vla.rth.finetune import RTHLoss

    return RTHLoss(model)


def _motion_rows(config: FinetuneConfig) -> np.ndarray | None:
    """--rth: which positions of every global batch are motion queries."""
    if not config.rth:
        return None
    from vla.rth.finetune import motion_query_rows

    return motion_query_rows(config.batch_size, config.rth_mix)


def _motion_swap(config: FinetuneConfig, data: TrainData):
    """--rth-swap: the rows of every global batch that train a swapped motion, and the motions' typical actions."""
    if not (config.rth and config.rth_swap):
        return None
    from vla.rth.finetune import MotionSwap

    return MotionSwap(data.train.motions, data.train.actions, config.batch_size, config.rth_mix, config.rth_swap,
                      config.seed, config.rth_swap_compose)


def _gather_model(config: FinetuneConfig, wrapped: torch.nn.Module, module: ActionLoss, ctx: DistContext):
    """The trained OpenVLA, whole, on rank 0 (FSDP shards are gathered into a fresh unsharded copy)."""
    if not (ctx.distributed and config.mode == "full"):
        return module.vla
    state = get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not ctx.is_main:
        return None
    fresh = load_base(config, torch.device("cpu"))
    set_trainable(fresh, config)
    ActionLoss(fresh).load_state_dict(state, strict=True)
    return fresh


def _write_final(out: pathlib.Path, config: FinetuneConfig, model, data: TrainData) -> None:
    """Write the checkpoint into a temporary folder, then move its entries into `out`."""
    tmp = out / FINAL_TMP
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    if config.rth:  # the `rth` table of config.json: what makes it an RT-H checkpoint
        from vla.rth.finetune import mark_rth

        mark_rth(model, data.train.motions, data.train.instructions, config.rth_lookahead, config.rth_mix)
    write_output(tmp, config, model, data.norm_stats)
    for entry in sorted(tmp.iterdir(), key=lambda p: p.name == "config.json"):  # config.json last
        target = out / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        entry.replace(target)
    tmp.rmdir()
