"""FinetuneConfig validation, JSON round trip, and the learning-rate schedule."""
from __future__ import annotations

import dataclasses
import pathlib

import pytest

from vla.train import FinetuneConfig, LoraSettings, OptimSettings
from vla.train.errors import TrainConfigError
from vla.train.loop import LrSchedule


def _config(**kw) -> FinetuneConfig:
    base = dict(base="tiny", out=pathlib.Path("/tmp/x"), data_dir=pathlib.Path("/tmp/d"), dataset="colours")
    return FinetuneConfig(**{**base, **kw})


@pytest.mark.parametrize("kw, words", [
    ({"dataset": None}, "exactly one of --dataset"),
    ({"mixture": "oxe_magic_soup"}, "exactly one of --dataset"),
    ({"resume": True, "overwrite": True}, "pick one"),
    ({"max_steps": 0}, "max_steps"),
    ({"heldout_fraction": 1.0}, "heldout-fraction"),
    ({"optim": OptimSettings(warmup_steps=50), "max_steps": 10}, "warmup"),
    ({"mode": "full", "merge": True}, "--merge applies to LoRA"),
    ({"stop_at_step": 11, "max_steps": 10}, "--stop-at-step"),
    ({"lora": LoraSettings(dropout=1.5)}, "lora.dropout"),
])
def test_bad_settings_raise_naming_the_flag(kw, words):
    with pytest.raises(TrainConfigError, match=words):
        _config(**kw)


def test_global_batch_must_split_over_processes_and_accumulation():
    cfg = _config(batch_size=12, grad_accum=3)
    assert cfg.micro_batch(1) == 4 and cfg.micro_batch(2) == 2
    with pytest.raises(TrainConfigError, match="multiple of 9"):
        _config(batch_size=12, grad_accum=3).micro_batch(3)


def test_json_round_trip_keeps_every_field():
    cfg = _config(mode="qlora", lora=LoraSettings(rank=4, alpha=8.0, target_modules="q_proj,v_proj"),
                  optim=OptimSettings(lr=1e-3, betas=(0.8, 0.9), schedule="cosine", warmup_steps=3))
    assert FinetuneConfig.from_json(cfg.to_json()) == cfg
    assert cfg.lora.targets() == ["q_proj", "v_proj"]
    assert dataclasses.replace(cfg, seed=1).fingerprint() != cfg.fingerprint()
    assert dataclasses.replace(cfg, eval_every=3).fingerprint() == cfg.fingerprint()  # logging may change on resume


def test_schedule_warms_up_then_decays():
    cosine = LrSchedule(warmup=4, total=14, kind="cosine")
    assert [cosine(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cosine(9) == pytest.approx(0.5) and cosine(14) == pytest.approx(0.0)
    linear = LrSchedule(warmup=0, total=10, kind="linear")
    assert linear(0) == 1.0 and linear(5) == pytest.approx(0.5)
    assert LrSchedule(warmup=0, total=10, kind="constant")(7) == 1.0
