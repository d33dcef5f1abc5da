"""Reading and writing OpenVLA Hugging Face checkpoint folders.

A folder holds config.json (with `norm_stats`), model.safetensors (or shards with
model.safetensors.index.json), tokenizer files, and optionally dataset_statistics.json (written by
fine-tuning; its keys extend or replace those of config.json).
"""
from __future__ import annotations

import json
import logging
import pathlib
from typing import Any, Callable, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from vla.errors import CheckpointError
from vla.model.config import OpenVLAConfig
from vla.model.normalization import ActionStats

log = logging.getLogger(__name__)

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
STATISTICS = "dataset_statistics.json"
REQUIRED_FILES = (CONFIG, "tokenizer.json", "tokenizer_config.json")
ADAPTER_CONFIG = "adapter_config.json"  # peft's names: a LoRA adapter folder refers to its base
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def is_adapter_folder(path: pathlib.Path) -> bool:
    """Whether `path` holds LoRA adapter files (adapter_config.json) rather than full weights."""
    return path.is_dir() and (path / ADAPTER_CONFIG).is_file()


def read_adapter(path: pathlib.Path) -> tuple[dict[str, Any], pathlib.Path, dict[str, torch.Tensor], dict[str, Any]]:
    """An adapter folder's LoRA config, its base folder, its tensors and its statistics."""
    cfg = _read_json(path / ADAPTER_CONFIG)
    missing = [k for k in ("base_model_name_or_path", "r", "target_modules") if k not in cfg]
    if missing or cfg.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{path / ADAPTER_CONFIG} is not a LoRA adapter config (missing {missing} or "
                              f"peft_type {cfg.get('peft_type')!r}); only LoRA adapters are supported")
    base = pathlib.Path(cfg["base_model_name_or_path"])
    base = base if base.is_absolute() else path / base
    if not base.is_dir():
        raise CheckpointError(f"the adapter in {path} refers to base {cfg['base_model_name_or_path']!r}, which is not "
                              f"a folder here ({base}); put the base checkpoint there or edit "
                              f"base_model_name_or_path in {ADAPTER_CONFIG}")
    if not (path / ADAPTER_WEIGHTS).is_file():
        raise CheckpointError(f"{path} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}; the adapter is incomplete")
    tensors = read_tensors_file(path / ADAPTER_WEIGHTS)
    stats = _read_json(path / STATISTICS) if (path / STATISTICS).is_file() else {}
    return cfg, base, tensors, stats


def check_folder(path: pathlib.Path) -> None:
    """Raise a CheckpointError naming what is missing unless `path` looks like a checkpoint folder."""
    if not path.exists():
        raise CheckpointError(f"checkpoint folder {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file; pass the checkpoint FOLDER (with config.json and model.safetensors)")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if not (path / WEIGHTS).is_file() and not (path / WEIGHTS_INDEX).is_file():
        missing.append(f"{WEIGHTS} (or {WEIGHTS_INDEX} with shards)")
    if missing:
        raise CheckpointError(
            f"{path} is not an OpenVLA checkpoint folder: missing {missing}. Expected the layout of "
            "openvla/openvla-7b (config.json, model.safetensors, tokenizer.json, tokenizer_config.json)")


def _read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the checkpoint is damaged") from e


def read_config(path: pathlib.Path) -> tuple[OpenVLAConfig, dict[str, Any]]:
    """The architecture config and the normalization statistics of a checkpoint folder."""
    raw = _read_json(path / CONFIG)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path / CONFIG} holds a {type(raw).__name__}, not an object")
    norm_stats = dict(raw.get("norm_stats") or {})  # a base model for fine-tuning may have none
    if (path / STATISTICS).is_file():
        norm_stats.update(_read_json(path / STATISTICS))
    for key, entry in norm_stats.items():
        if not isinstance(entry, dict) or "action" not in entry:
            raise CheckpointError(f"statistics {key!r} in {path} have no 'action' entry; recompute them")
        ActionStats.from_dict(entry["action"], where=f"statistics {key!r} in {path}")
    if not norm_stats:
        log.warning("%s has no normalization statistics; predict_action will need them", path)
    return OpenVLAConfig.from_json(raw), norm_stats


def weight_files(path: pathlib.Path) -> list[pathlib.Path]:
    """The safetensors files of a folder: one file, or the shards its index names."""
    if (path / WEIGHTS).is_file():
        return [path / WEIGHTS]
    index = _read_json(path / WEIGHTS_INDEX)
    names = sorted(set(index["weight_map"].values()))
    missing = [n for n in names if not (path / n).is_file()]
    if missing:
        raise CheckpointError(f"{path / WEIGHTS_INDEX} names shards that are absent: {missing}")
    return [path / n for n in names]


def read_tensors_file(file: pathlib.Path, rename: Callable[[str], str] = str,
                      dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The tensors of one safetensors file, keys mapped through `rename`, optionally cast to `dtype`."""
    out: dict[str, torch.Tensor] = {}
    with safe_open(str(file), framework="pt") as f:
        for key in f.keys():
            t = f.get_tensor(key)
            out[rename(key)] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    return out


def read_tensors(path: pathlib.Path, rename: Callable[[str], str],
                 dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder (one file or shards)."""
    out: dict[str, torch.Tensor] = {}
    for file in weight_files(path):
        out.update(read_tensors_file(file, rename, dtype))
    return out


def load_weights(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: pathlib.Path) -> None:
    """Strict load: every parameter present with its shape, nothing left over."""
    want = model.state_dict()
    missing, extra = want.keys() - tensors.keys(), tensors.keys() - want.keys()
    bad = [f"{k} {tuple(tensors[k].shape)} != {tuple(want[k].shape)}"
           for k in sorted(want.keys() & tensors.keys()) if tensors[k].shape != want[k].shape]
    if missing or extra or bad:
        raise CheckpointError(
            f"weights in {source} do not fit the architecture of its config.json: "
            f"{len(missing)} missing (e.g. {sorted(missing)[:3]}), {len(extra)} unexpected "
            f"(e.g. {sorted(extra)[:3]}), {len(bad)} of another shape (e.g. {bad[:3]}). "
            "Is config.json from the same model as model.safetensors?")
    model.load_state_dict(dict(tensors), strict=True, assign=True)


def write_checkpoint(path: pathlib.Path, config: OpenVLAConfig, norm_stats: Mapping[str, Any],
                     tensors: Mapping[str, torch.Tensor], extra_json: Mapping[str, Any]) -> None:
    """Write config.json (+ norm_stats), model.safetensors, dataset_statistics.json and extra JSON files."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = config.to_json()
    cfg["norm_stats"] = dict(norm_stats)
    (path / CONFIG).write_text(json.dumps(dict(sorted(cfg.items())), indent=2) + "\n")
    if norm_stats:
        (path / STATISTICS).write_text(json.dumps(dict(norm_stats), indent=2) + "\n")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path / WEIGHTS),
              metadata={"format": "pt"})
    for name, content in extra_json.items():
        (path / name).write_text(json.dumps(content, indent=2) + "\n")
