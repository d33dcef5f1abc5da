"""Training-time image augmentation in `vla finetune --image-aug`: seeded, resumable, recorded."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import vla
from vla.train import FinetuneConfig, LoraSettings, OptimSettings, finetune
from vla.train.data import AugmentSeed
from vla.train.errors import TrainConfigError
from vla.train.logs import read_metrics


def _config(out: pathlib.Path, data_dir: pathlib.Path, **kw) -> FinetuneConfig:
    base = dict(base="tiny", out=out, data_dir=data_dir, dataset="colours", mode="full", max_steps=4, batch_size=4,
                eval_every=4, eval_samples=8, checkpoint_every=1, log_every=1, progress=False, image_aug=True,
                lora=LoraSettings(rank=4), optim=OptimSettings(lr=3e-3), heldout_fraction=0.25)
    return FinetuneConfig(**{**base, **kw})


def test_augmentation_is_a_function_of_seed_step_frame_and_role():
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    a = AugmentSeed(seed=1, step=3, frames=(5, 9), size=32)
    first = a.apply(image, 0, 0)
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    assert np.array_equal(first, AugmentSeed(seed=1, step=3, frames=(7, 5), size=32).apply(image, 1, 0))
    assert not np.array_equal(first, a.apply(image, 1, 0))  # another frame: another draw
    assert not np.array_equal(first, a.apply(image, 0, 1))  # another camera role: another draw
    assert not np.array_equal(first, AugmentSeed(seed=1, step=4, frames=(5,), size=32).apply(image, 0, 0))


def test_augmented_run_resumes_exactly_and_evaluates_on_the_centre_crop(colour_data, tmp_path):
    whole = finetune(_config(tmp_path / "whole", colour_data))
    split = tmp_path / "split"
    finetune(_config(split, colour_data, stop_at_step=2))
    finetune(_config(split, colour_data, resume=True))
    curve = lambda out: [(r["step"], r["train/loss"]) for r in read_metrics(out) if "train/loss" in r]
    assert curve(split) == curve(whole)
    plain = finetune(_config(tmp_path / "plain", colour_data, image_aug=False))
    assert curve(plain) != curve(whole)  # the augmentation really changed what the model saw
    assert json.loads((whole / "config.json").read_text())["eval_center_crop_area"] == pytest.approx(0.9)
    assert "eval_center_crop_area" not in json.loads((plain / "config.json").read_text())
    model = vla.OpenVLA.from_pretrained(whole)
    assert model.config.eval_center_crop_area == pytest.approx(0.9)
    frame = next(iter(vla.data.load_frames("colours", colour_data)))
    assert model.predict_action(frame["images"]["primary"], frame["instruction"], unnorm_key="colours").shape == (7,)


def test_adapter_files_cannot_carry_the_crop_so_lora_needs_merge(colour_data, tmp_path):
    with pytest.raises(TrainConfigError, match="--image-aug .* --merge"):
        _config(tmp_path / "x", colour_data, mode="lora")
