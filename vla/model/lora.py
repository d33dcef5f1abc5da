"""LoRA adapters on an OpenVLA model via peft (real LoRA modules injected in place).

OpenVLA fine-tunes with rank 32, alpha min(rank, 16), no dropout, Gaussian init, on "all-linear":
every linear layer of the vision backbone, projector and Llama except the output head.
"""
from __future__ import annotations

import logging
from typing import Sequence

import peft
from peft.tuners.lora import LoraLayer
from torch import nn

from vla.errors import LoraError
from vla.model.openvla import OpenVLA, has_lora

log = logging.getLogger(__name__)

ALL_LINEAR = "all-linear"
EXCLUDED = ("language_model.lm_head",)  # the output head stays full rank, as peft's all-linear does


def _unused(model: OpenVLA) -> tuple[str, ...]:
    return tuple(f"vision_backbone.{n}" for n in model.vision_backbone.unused_module_names())


def linear_module_names(model: OpenVLA) -> list[str]:
    """Linear layers "all-linear" means, minus the output head and layers the forward never runs."""
    unused = _unused(model)
    return [name for name, m in model.named_modules()  # bitsandbytes layers subclass nn.Linear
            if isinstance(m, nn.Linear) and name not in EXCLUDED
            and not any(name == u or name.startswith(u + ".") for u in unused)]


def add_lora(model: OpenVLA, rank: int = 32, target_modules: str | Sequence[str] = ALL_LINEAR,
             alpha: float | None = None, dropout: float = 0.0) -> OpenVLA:
    """Inject LoRA adapters (in place) and freeze everything else; returns the same model."""
    if has_lora(model):
        raise LoraError("this model already carries LoRA adapters; merge_lora(model) first or use it as is")
    if rank < 1:
        raise LoraError(f"LoRA rank must be >= 1, got {rank}")
    targets = linear_module_names(model) if target_modules == ALL_LINEAR else list(target_modules)
    known = {name for name, _ in model.named_modules()}
    unknown = [t for t in targets if t not in known and not any(n.endswith("." + t) for n in known)]
    if unknown:
        raise LoraError(f"target_modules {unknown} match no module; use {ALL_LINEAR!r} or names such as "
                        "'q_proj', 'v_proj', 'language_model.model.layers.0.mlp.up_proj'")
    config = peft.LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else min(rank, 16),
                             lora_dropout=dropout, target_modules=targets, init_lora_weights="gaussian")
    peft.inject_adapter_in_model(config, model)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("LoRA rank %d on %d modules: %d trainable parameters", rank, len(targets), n_train)
    return model


def lora_layers(model: nn.Module) -> list[tuple[str, LoraLayer]]:
    """The injected LoRA layers, by module name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def merge_lora(model: OpenVLA, unload: bool = True) -> OpenVLA:
    """Fold the adapters into the base weights; `unload` also removes the LoRA modules (for saving)."""
    layers = lora_layers(model)
    if not layers:
        raise LoraError("this model has no LoRA adapters to merge; add_lora(model) first")
    for name, layer in layers:
        if not layer.merged:
            layer.merge()
        if unload:
            model.set_submodule(name, layer.get_base_layer())
    if unload:  # back to a plain model, trainable as built
        model.requires_grad_(True)
        for name in _unused(model):
            model.get_submodule(name).requires_grad_(False)
    return model


def unmerge_lora(model: OpenVLA) -> OpenVLA:
    """Undo `merge_lora(model, unload=False)`: base weights restored, adapters active again."""
    layers = lora_layers(model)
    if not layers:
        raise LoraError("this model has no LoRA modules; merge_lora(..., unload=True) removed them for good")
    for _, layer in layers:
        if layer.merged:
            layer.unmerge()
    return model
