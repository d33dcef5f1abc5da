"""One process or many: the torchrun environment, DDP (LoRA) / FSDP (full) wrapping, small collectives.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `DistContext.from_env` reads them once at the entry
of `finetune`, nowhere else. CPU runs use the gloo backend, GPUs nccl.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from vla.train.errors import TrainConfigError, TrainError

if TYPE_CHECKING:
    from vla.train.config import FinetuneConfig

log = logging.getLogger(__name__)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclasses.dataclass(frozen=True)
class DistContext:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str, env: dict[str, str] | None = None) -> "DistContext":
        """Join the process group when started by torchrun; pick the device ("auto", "cpu", "cuda")."""
        env = dict(os.environ if env is None else env)
        world = int(env.get("WORLD_SIZE", "1"))
        local = int(env.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise TrainConfigError("--device cuda asked, but torch sees no GPU here; use --device cpu")
            dev = torch.device("cuda", local if world > 1 else (dev.index or 0))
            torch.cuda.set_device(dev)
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        return cls(rank=int(env.get("RANK", "0")), world_size=world, device=dev)

    def barrier(self) -> None:
        """Wait for every rank (no-op for one process)."""
        if self.distributed:
            dist.barrier()

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of `values` over ranks."""
        if not self.distributed:
            return [float(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def all_gather_digest(self, digest: bytes) -> list[str]:
        """Every rank's digest (hex), in rank order."""
        if not self.distributed:
            return [digest.hex()]
        mine = torch.frombuffer(bytearray(digest), dtype=torch.uint8)
        out = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(out, mine)
        return [bytes(t.tolist()).hex() for t in out]

    def close(self) -> None:
        """Leave the process group."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def shard_full(module: nn.Module) -> nn.Module:
    """FSDP2: shard every transformer block of the ViTs and the Llama, then the rest at the root."""
    from torch.distributed.fsdp import fully_shard

    vla = module.vla
    blocks = [*vla.language_model.model.layers]
    for vit in vla.vision_backbone.vits:
        blocks += [*vit.blocks]
    for block in blocks:
        fully_shard(block)
    fully_shard(module)
    return module


def wrap(module: nn.Module, mode: str, ctx: DistContext) -> nn.Module:
    """DDP for adapters (small gradients, replicated base); FSDP for full fine-tuning; as-is for one process."""
    if not ctx.distributed:
        return module
    if mode == "full":
        return shard_full(module)
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def replica_digests(wrapped: nn.Module, ctx: DistContext) -> list[str] | None:
    """sha256 of each rank's trainable weights where they are replicated (DDP, one process); None for FSDP."""
    if ctx.distributed and not isinstance(wrapped, nn.parallel.DistributedDataParallel):
        return None
    h = hashlib.sha256()
    for name, p in wrapped.named_parameters():
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return ctx.all_gather_digest(h.digest())


@contextlib.contextmanager
def no_grad_sync(wrapped: nn.Module, skip: bool) -> Iterator[None]:
    """During gradient accumulation, skip the cross-rank gradient reduction of all but the last micro-step."""
    if not skip:
        yield
        return
    if hasattr(wrapped, "no_sync"):  # DDP
        with wrapped.no_sync():
            yield
    elif hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)
    else:
        yield


def launch(config: "FinetuneConfig", nproc: int, timeout_s: float | None = None) -> int:
    """Run `config` under torchrun with `nproc` local processes (`python -m vla.train`); their exit code."""
    import tempfile

    if nproc < 1:
        raise TrainConfigError(f"--nproc {nproc} must be >= 1")
    with tempfile.TemporaryDirectory(prefix="vla-finetune-") as tmp:
        path = pathlib.Path(tmp) / "config.json"
        path.write_text(json.dumps(config.to_json()))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "vla.train", "--config-file", str(path)]
        log.info("launching %s", " ".join(cmd))
        try:
            return subprocess.run(cmd, check=False, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired as e:
            raise TrainError(f"torchrun with {nproc} processes ran past {timeout_s} s and was stopped") from e
