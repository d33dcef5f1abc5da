"""torchrun with 2 CPU processes (gloo): DDP for LoRA, FSDP for full, against one process with the same batch."""
from __future__ import annotations

import json
import pathlib

import pytest
import torch
from safetensors.torch import load_file

from vla.train import FinetuneConfig, LoraSettings, OptimSettings, finetune
from vla.train.checkpoint import checkpoint_dirs
from vla.train.distributed import launch
from vla.train.logs import read_metrics

LAUNCH_TIMEOUT_S = 300


def _curve(out: pathlib.Path) -> list[float]:
    return [r["train/loss"] for r in read_metrics(out) if "train/loss" in r]


def _pair(mode: str, data_dir: pathlib.Path, tmp: pathlib.Path, weights: str) -> tuple[pathlib.Path, pathlib.Path]:
    # global batch 4 = 2 ranks x micro 2: each rank reads its own half of every step's samples
    cfg = FinetuneConfig(base="tiny", out=tmp / f"{mode}-1", data_dir=data_dir, dataset="colours", mode=mode,
                         max_steps=2, batch_size=4, eval_every=2, eval_samples=8, checkpoint_every=2,
                         progress=False, lora=LoraSettings(rank=4), optim=OptimSettings(lr=3e-3))
    single = finetune(cfg)
    multi = cfg.out.with_name(f"{mode}-2")
    assert launch(FinetuneConfig.from_json({**cfg.to_json(), "out": str(multi)}), 2,
                  timeout_s=LAUNCH_TIMEOUT_S) == 0
    a, b = load_file(str(single / weights)), load_file(str(multi / weights))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{mode}: {k} differs")
    assert _curve(multi) == pytest.approx(_curve(single), rel=1e-4)
    return single, multi


@pytest.mark.slow
def test_ddp_lora_replicas_stay_identical_and_match_one_process(colour_data, tmp_path):
    _, multi = _pair("lora", colour_data, tmp_path, "adapter_model.safetensors")
    state = json.loads((checkpoint_dirs(multi)[-1][1] / "state.json").read_text())
    assert state["world_size"] == 2
    digests = state["replica_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]


@pytest.mark.slow
def test_fsdp_full_matches_one_process(colour_data, tmp_path):
    _, multi = _pair("full", colour_data, tmp_path, "model.safetensors")
    assert json.loads((checkpoint_dirs(multi)[-1][1] / "state.json").read_text())["world_size"] == 2
