"""The base model for each mode (lora, qlora, full), which weights train, and the output folder.

Output: with `--mode full` or `--merge`, a plain OpenVLA folder. Otherwise the adapter files
(adapter_config.json + adapter_model.safetensors, peft's names) next to config.json, tokenizer and
dataset_statistics.json, and a reference to the base weights: the base folder's absolute path, or,
for a preset base (random init), a copy of that base in `<out>/base/`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Any

import torch
from safetensors.torch import save_file

from vla.model.checkpoint import ADAPTER_CONFIG, ADAPTER_WEIGHTS, STATISTICS
from vla.model.lora import add_lora, lora_layers, merge_lora
from vla.model.multi_image import set_image_roles
from vla.model.normalization import ActionStats
from vla.model.openvla import OpenVLA
from vla.model.presets import PRESETS
from vla.train.config import FinetuneConfig
from vla.data.batches import Augment
from vla.train.errors import IncompatibleDataError, TrainConfigError

log = logging.getLogger(__name__)

BASE_COPY = "base"  # <out>/base/: the random-init preset base an adapter refers to


def load_base(config: FinetuneConfig, device: torch.device) -> OpenVLA:
    """The base model in full precision (QLoRA: NF4 4-bit linear layers), seeded, on `device`."""
    path = pathlib.Path(config.base)
    if path.exists():
        model = OpenVLA.from_pretrained(path)
    elif config.base in PRESETS:
        model = OpenVLA.from_preset(config.base, seed=config.seed)
    else:
        raise TrainConfigError(f"--base {config.base!r} is neither an existing checkpoint folder nor a preset "
                               f"name ({sorted(PRESETS)}); pass the folder of an OpenVLA checkpoint")
    if config.images is not None:  # the cameras of this run; new role embeddings / VIB heads seeded
        set_image_roles(model, *config.cameras(), seed=config.seed)
    model.to(device)
    if config.mode == "qlora":
        from vla.model.quantization import quantize
        quantize(model, "4bit")
    return model


def check_action_dim(model: OpenVLA, action_dim: int, allow_new: bool) -> None:
    """Refuse a dataset whose action size none of the base's statistics has (unless allowed)."""
    # the checkpoint loader validated every entry (each has action q01/q99)
    dims = {key: ActionStats.from_dict(entry["action"]).dim for key, entry in model.norm_stats.items()}
    if dims and action_dim not in dims.values() and not allow_new:
        raise IncompatibleDataError(
            f"the dataset has {action_dim}-dim actions but the base was trained on {sorted(set(dims.values()))}-dim "
            f"actions ({dict(list(dims.items())[:3])}...); use a dataset of the base's action space, or pass "
            "--allow-new-action-dim to teach it a new one")


def set_trainable(model: OpenVLA, config: FinetuneConfig) -> OpenVLA:
    """Full: every weight (vision optional); LoRA/QLoRA: adapters only (vision adapters optional)."""
    if config.mode == "full":
        model.requires_grad_(True)
        for name in model.vision_backbone.unused_module_names():  # never run in the forward
            model.vision_backbone.get_submodule(name).requires_grad_(False)
    else:
        add_lora(model, rank=config.lora.rank, target_modules=config.lora.targets(), alpha=config.lora.alpha,
                 dropout=config.lora.dropout)
        if model.role_tokens is not None:  # new for this run (role embeddings, VIB heads): trained in full
            model.role_tokens.requires_grad_(True)
    if config.freeze_vision:
        model.vision_backbone.requires_grad_(False)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n == 0:
        raise TrainConfigError("no weight is left to train (check --lora.target-modules and --freeze-vision)")
    log.info("%s: %d trainable parameters of %d", config.mode, n, sum(p.numel() for p in model.parameters()))
    return model


def lora_state(model: OpenVLA) -> dict[str, torch.Tensor]:
    """The adapter weights, by their names in the model."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if ".lora_" in k}


def adapter_config(config: FinetuneConfig, model: OpenVLA, base_ref: str) -> dict[str, Any]:
    """adapter_config.json: peft's LoRA fields plus the base reference."""
    targets = sorted({name for name, _ in lora_layers(model)})
    first = lora_layers(model)[0][1]
    return {"peft_type": "LORA", "base_model_name_or_path": base_ref, "r": config.lora.rank,
            "lora_alpha": float(first.lora_alpha["default"]), "lora_dropout": config.lora.dropout,
            "target_modules": targets, "init_lora_weights": "gaussian", "bias": "none",
            "trained_with": "vla finetune", "quantized_base": config.mode == "qlora"}


def write_output(out: pathlib.Path, config: FinetuneConfig, model: OpenVLA, norm_stats: dict[str, Any]) -> None:
    """Write the fine-tuned checkpoint into `out` (model: the trained, unwrapped model, on rank 0)."""
    stats = {**model.norm_stats, **norm_stats}
    if config.mode != "full" and not config.merge:
        _write_adapter(out, config, model, stats)
        return
    if config.mode == "qlora":  # 4-bit weights cannot absorb an adapter: merge into the full-precision base
        trained, extra = lora_state(model), model.config.extra
        model = load_base(dataclasses.replace(config, mode="lora"), torch.device("cpu"))
        model.config = dataclasses.replace(model.config, extra=extra)  # what training recorded (RT-H's table)
        set_trainable(model, dataclasses.replace(config, mode="lora"))
        result = model.load_state_dict(trained, strict=False)  # the base's own weights are not in `trained`
        if result.unexpected_keys or set(trained) != set(lora_state(model)):
            raise TrainConfigError(f"the trained adapter does not fit the full-precision base "
                                   f"(unexpected {result.unexpected_keys[:3]}); run without --merge (adapter files) and report this")
    if config.mode != "full":
        merge_lora(model)
    model.norm_stats = stats
    model.cpu().save_pretrained(out)
    if config.image_aug:  # trained on random 0.9-area crops: evaluate on the centre crop of that area
        path = out / "config.json"
        record = json.loads(path.read_text())
        record["eval_center_crop_area"] = Augment().crop_area
        path.write_text(json.dumps(record, indent=2) + "\n")


def _write_adapter(out: pathlib.Path, config: FinetuneConfig, model: OpenVLA, stats: dict[str, Any]) -> None:
    path = pathlib.Path(config.base)
    if path.exists():
        base_ref = str(path.resolve())
    else:  # a random-init preset has no folder to point at: keep the exact base next to the adapter
        base = load_base(dataclasses.replace(config, mode="lora"), torch.device("cpu"))
        base.save_pretrained(out / BASE_COPY)
        base_ref = BASE_COPY
    save_file(lora_state(model), str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (out / ADAPTER_CONFIG).write_text(json.dumps(adapter_config(config, model, base_ref), indent=2) + "\n")
    (out / STATISTICS).write_text(json.dumps(stats, indent=2) + "\n")
    model.processor.tokenizer.save(out)
