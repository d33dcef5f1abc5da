"""End-to-end fine-tuning runs of the tiny preset on a tiny RLDS set: outputs, resume, bad input."""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vla
from vla.data.statistics import compute_statistics
from vla.train import FinetuneConfig, LoraSettings, OptimSettings, finetune
from vla.train.checkpoint import checkpoint_dirs
from vla.train.errors import (IncompatibleDataError, NonFiniteLossError, OutputExistsError, ResumeError,
                              TrainOutOfMemoryError)
from vla.train.logs import read_metrics
from vla.train.loop import SUMMARY, oom_advice


def _config(out: pathlib.Path, data_dir: pathlib.Path, **kw) -> FinetuneConfig:
    base = dict(base="tiny", out=out, data_dir=data_dir, dataset="colours", max_steps=3, batch_size=4,
                eval_every=2, eval_samples=8, checkpoint_every=2, log_every=1, progress=False,
                lora=LoraSettings(rank=4), optim=OptimSettings(lr=3e-3), heldout_fraction=0.25)
    return FinetuneConfig(**{**base, **kw})


def _frame(data_dir):
    return next(iter(vla.data.load_frames("colours", data_dir)))


@pytest.fixture(scope="module")
def full_run(colour_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    return finetune(_config(out, colour_data, mode="full"))


def test_full_run_writes_a_loadable_checkpoint_with_statistics(full_run, colour_data):
    model = vla.OpenVLA.from_pretrained(full_run)
    assert set(model.norm_stats) == {"colours"}
    assert model.norm_stats["colours"] == compute_statistics("colours", colour_data)
    frame = _frame(colour_data)
    action = model.predict_action(frame["images"]["primary"], frame["instruction"], unnorm_key="colours")
    q01, q99 = (np.asarray(model.norm_stats["colours"]["action"][k]) for k in ("q01", "q99"))
    assert action.shape == (7,) and np.all(action[:6] >= q01[:6] - 1e-6) and np.all(action[:6] <= q99[:6] + 1e-6)


def test_full_run_logs_checkpoints_and_summary(full_run):
    rows = read_metrics(full_run)
    steps = [r for r in rows if "train/loss" in r]
    evals = [r for r in rows if "heldout/accuracy" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and [r["step"] for r in evals] == [2, 3]
    assert all(np.isfinite(r["train/loss"]) and 0 <= r["train/accuracy"] <= 1 for r in steps)
    assert list((full_run / "logs").glob("events.out.tfevents.*"))
    assert [s for s, _ in checkpoint_dirs(full_run)] == [3]  # keep_checkpoints=1: step 2 was replaced
    assert not list((full_run / "checkpoints").glob(".tmp-*"))
    summary = json.loads((full_run / SUMMARY).read_text())
    assert summary["steps"] == 3 and summary["samples_per_s"] > 0 and summary["episodes"] == {"colours": [6, 2]}
    assert summary["heldout_accuracy"] == evals[-1]["heldout/accuracy"]


def test_existing_output_is_refused_and_resume_needs_a_run(full_run, colour_data, tmp_path):
    with pytest.raises(OutputExistsError, match="--resume .* --overwrite"):
        finetune(_config(full_run, colour_data, mode="full"))
    with pytest.raises(ResumeError, match="settings \\['seed'\\] differ"):
        finetune(_config(full_run, colour_data, mode="full", resume=True, seed=8))
    with pytest.raises(ResumeError, match="holds no fine-tuning run"):
        finetune(_config(tmp_path / "empty", colour_data, resume=True))


def test_resumed_run_matches_an_uninterrupted_one(colour_data, tmp_path):
    # dropout > 0 makes the result depend on the restored RNG state, not only on weights and optimizer
    kw = dict(max_steps=4, lora=LoraSettings(rank=4, dropout=0.2), optim=OptimSettings(lr=3e-3, warmup_steps=2,
              schedule="cosine"), checkpoint_every=1, grad_accum=2)
    whole = finetune(_config(tmp_path / "whole", colour_data, **kw))
    split = tmp_path / "split"
    finetune(_config(split, colour_data, stop_at_step=2, **kw))
    assert [s for s, _ in checkpoint_dirs(split)] == [2] and not (split / "adapter_model.safetensors").exists()
    finetune(_config(split, colour_data, resume=True, **kw))
    curve = lambda out: [(r["step"], r["train/loss"], r["train/lr"]) for r in read_metrics(out) if "train/loss" in r]
    assert curve(split) == curve(whole)
    a, b = load_file(str(whole / "adapter_model.safetensors")), load_file(str(split / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    finetune(_config(split, colour_data, resume=True, **kw))  # nothing left to do: evaluates, rewrites, same curve
    assert curve(split) == curve(whole)
    assert json.loads((split / SUMMARY).read_text())["session_steps"] == 0


def test_action_dims_that_the_base_never_had_are_refused(colour_data, tmp_path):
    base = vla.OpenVLA.from_preset("tiny", norm_stats={"colours": compute_statistics("colours", colour_data)})
    base.save_pretrained(tmp_path / "base7")
    cfg = _config(tmp_path / "run", colour_data, base=str(tmp_path / "base7"), dataset="colours6")
    with pytest.raises(IncompatibleDataError, match="6-dim actions .* \\[7\\]-dim .* --allow-new-action-dim"):
        finetune(cfg)


def test_nan_loss_stops_naming_step_and_batch_and_keeps_the_checkpoint(colour_data, tmp_path):
    # an absurd learning rate blows the weights up after the first update; the next loss is not finite
    cfg = _config(tmp_path / "nan", colour_data, mode="full", max_steps=5, checkpoint_every=1,
                  optim=OptimSettings(lr=1e30, max_grad_norm=0.0))
    with pytest.raises(NonFiniteLossError, match=r"at step 2 \(micro-batch 0 on rank 0: frames \[") as e:
        finetune(cfg)
    assert "step_0000001" in str(e.value)
    assert [s for s, _ in checkpoint_dirs(cfg.out)] == [1]
    weights = load_file(str(checkpoint_dirs(cfg.out)[0][1] / "trainable.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_out_of_memory_becomes_advice(tmp_path):
    cfg = _config(tmp_path, tmp_path, mode="full", batch_size=8, grad_accum=2)
    with pytest.raises(TrainOutOfMemoryError, match="--mode qlora .* --grad-accum"):
        with oom_advice(cfg, micro=4):
            torch.empty(2**60, dtype=torch.uint8)  # a real allocation no machine here can satisfy
    with pytest.raises(ValueError, match="unrelated"):  # other errors pass through unchanged
        with oom_advice(cfg, micro=4):
            raise ValueError("unrelated")


def test_qlora_trains_adapters_on_a_4bit_base(colour_data, tmp_path):
    from vla.model.quantization import probe

    reason = probe("4bit", "cpu")
    if reason is not None:
        pytest.skip(f"bitsandbytes cannot run 4-bit on this CPU: {reason}")
    out = finetune(_config(tmp_path / "q", colour_data, mode="qlora", max_steps=2, merge=True))
    model = vla.OpenVLA.from_pretrained(out)
    assert model.quantization is None and set(model.norm_stats) == {"colours"}
    steps = [r for r in read_metrics(out) if "train/loss" in r]
    assert len(steps) == 2 and all(np.isfinite(r["train/loss"]) for r in steps)
