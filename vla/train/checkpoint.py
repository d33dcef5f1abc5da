"""Training checkpoints: trainable weights, optimizer, scheduler, step and RNG, written atomically.

Layout: `<out>/checkpoints/step_<N>/` with trainable.safetensors, optimizer.safetensors +
optimizer.json, state.json and rng_rank<r>.safetensors. A checkpoint is written into a temporary
folder and renamed into place, so a folder named step_<N> is always complete; a crash mid-write
leaves only a `.tmp-*` folder that the next save or resume ignores. No pickle: tensors go to
safetensors, everything else to JSON.
"""
from __future__ import annotations

import json
import logging
import pathlib
import re
import shutil
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_state_dict, set_state_dict)

from vla.train.distributed import DistContext, replica_digests
from vla.train.errors import ReplicaMismatchError, ResumeError

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STEP_DIR = re.compile(r"^step_(\d+)$")
KEY_SEP = "::"  # optimizer tensor key = f"{parameter name}::{state name}"
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def checkpoint_dirs(out: pathlib.Path) -> list[tuple[int, pathlib.Path]]:
    """Complete checkpoints under `out`, oldest first."""
    root = out / CHECKPOINTS
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))] if root.is_dir() else []
    return sorted(found)


def _trainable_names(module: torch.nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def save(out: pathlib.Path, step: int, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: Any, ctx: DistContext, keep: int) -> pathlib.Path:
    """Write checkpoint `step` (collective: every rank calls it); keep the newest `keep` ones."""
    digests = replica_digests(module, ctx)
    if digests is not None and len(set(digests)) > 1:
        raise ReplicaMismatchError(f"at step {step} the ranks' weights differ (sha256 {digests}); data-parallel "
                                   "replicas diverged. Report this with the run's finetune_config.json")
    model_sd, optim_sd = get_state_dict(module, optimizer, options=FULL)  # gathers shards on every rank
    root = out / CHECKPOINTS
    tmp = root / f".tmp-step_{step}"
    final = root / f"step_{step:07d}"
    if ctx.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # a crash mid-write of this very step
        tmp.mkdir(parents=True)
    ctx.barrier()
    save_file({"rng": torch.get_rng_state()}, str(tmp / f"rng_rank{ctx.rank}.safetensors"))
    ctx.barrier()
    if ctx.rank == 0:
        names = _trainable_names(module)
        save_file({k: v.contiguous() for k, v in model_sd.items() if k in names}, str(tmp / "trainable.safetensors"))
        tensors = {f"{name}{KEY_SEP}{key}": t.contiguous()
                   for name, state in optim_sd["state"].items() for key, t in state.items()}
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in optim_sd["param_groups"]]
        (tmp / "optimizer.json").write_text(json.dumps({"param_groups": groups}, indent=1))
        (tmp / "state.json").write_text(json.dumps({"step": step, "world_size": ctx.world_size,
                                                    "replica_sha256": digests,
                                                    "scheduler": scheduler.state_dict()}, indent=1))
        tmp.rename(final)
        for _, old in checkpoint_dirs(out)[:-keep]:
            shutil.rmtree(old)
        log.info("checkpoint %s written", final)
    ctx.barrier()
    return final


def restore(out: pathlib.Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
            ctx: DistContext) -> int:
    """Load the newest complete checkpoint into module/optimizer/scheduler/RNG; return its step."""
    found = checkpoint_dirs(out)
    if not found:
        raise ResumeError(f"--resume: {out / CHECKPOINTS} holds no complete checkpoint (step_<N> folder); "
                          "start the run again without --resume (with --overwrite to replace the folder)")
    step, path = found[-1]
    state = json.loads((path / "state.json").read_text())
    if state["world_size"] != ctx.world_size:
        raise ResumeError(f"{path} was written by {state['world_size']} processes; resume with the same "
                          f"--nproc (this run has {ctx.world_size}) so every rank finds its RNG state")
    weights = load_file(str(path / "trainable.safetensors"))
    names = _trainable_names(module)
    if set(weights) != names:
        raise ResumeError(f"{path} holds weights for {len(weights)} trainable tensors but this run trains "
                          f"{len(names)} (e.g. {sorted(set(weights) ^ names)[:3]}); the run settings differ")
    groups = json.loads((path / "optimizer.json").read_text())["param_groups"]
    optim_state: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in load_file(str(path / "optimizer.safetensors")).items():
        name, sub = key.rsplit(KEY_SEP, 1)
        optim_state.setdefault(name, {})[sub] = t
    for g in groups:
        g["betas"] = tuple(g["betas"])
    set_state_dict(module, optimizer, model_state_dict=weights,
                   optim_state_dict={"state": optim_state, "param_groups": groups},
                   options=StateDictOptions(full_state_dict=True, strict=False))
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(load_file(str(path / f"rng_rank{ctx.rank}.safetensors"))["rng"])
    log.info("resumed from %s (step %d)", path, step)
    return step
