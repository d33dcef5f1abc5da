"""Which weights train in each mode, with and without a frozen vision backbone."""
from __future__ import annotations

import pathlib

import pytest

import vla
from vla.train import FinetuneConfig, LoraSettings
from vla.train.errors import TrainConfigError
from vla.train.modes import load_base, set_trainable


def _trainable(model, prefix: str) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and n.startswith(prefix))


def _cfg(**kw) -> FinetuneConfig:
    return FinetuneConfig(**{"base": "tiny", "out": pathlib.Path("o"), "data_dir": pathlib.Path("d"), "dataset": "x",
                             **kw})


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_freeze_vision_keeps_the_backbone_fixed(mode):
    for freeze in (False, True):
        model = set_trainable(vla.OpenVLA.from_preset("tiny"), _cfg(mode=mode, freeze_vision=freeze,
                                                                       lora=LoraSettings(rank=2)))
        assert (_trainable(model, "vision_backbone.") == 0) == freeze
        assert _trainable(model, "language_model.") > 0 and _trainable(model, "projector.") > 0
        if mode == "lora":  # adapters only: no base weight trains
            assert all(".lora_" in n for n, p in model.named_parameters() if p.requires_grad)


def test_unknown_base_and_nothing_to_train_are_refused():
    with pytest.raises(TrainConfigError, match="neither an existing checkpoint folder nor a preset"):
        load_base(_cfg(base="tinyy"), device=None)
    model = vla.OpenVLA.from_preset("tiny")
    with pytest.raises(TrainConfigError, match="no weight is left to train"):
        set_trainable(model, _cfg(mode="lora", freeze_vision=True, lora=LoraSettings(rank=2, target_modules="qkv")))  # ViT-only layers
