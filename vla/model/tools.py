"""What the `vla info` and `vla predict` verbs call: machine report and one-shot prediction from files."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import pathlib

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vla.errors import ImageError
from vla.model.openvla import OpenVLA
from vla.model.presets import PRESETS
from vla.model.quantization import MODES, probe

PACKAGES = ("torch", "torchvision", "transformers", "timm", "tokenizers", "peft", "bitsandbytes", "safetensors")


@dataclasses.dataclass(frozen=True)
class PresetInfo:
    """A preset's size, counted on the meta device (no memory, no weights)."""

    name: str
    parameters: int
    dtype: str
    llm_hidden: int
    llm_layers: int


def preset_info(name: str) -> PresetInfo:
    """Parameter count and sizes of a preset."""
    model = OpenVLA.from_preset(name, device="meta")
    text = model.config.text_config
    return PresetInfo(name, sum(p.numel() for p in model.parameters()), model.config.torch_dtype,
                      text.hidden_size, text.num_hidden_layers)


def system_info() -> dict:
    """Presets, package versions, CUDA, and which bitsandbytes modes run on which device here."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    quant = {f"{mode} on {dev}": probe(mode, dev) or "ok" for mode in MODES for dev in devices}
    return {
        "presets": [dataclasses.asdict(preset_info(n)) for n in PRESETS],
        "versions": versions,
        "cuda": {"available": torch.cuda.is_available(),
                 "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]},
        "quantization": quant,
    }


def load_image(path: pathlib.Path) -> np.ndarray:
    """An image file as an HxWx3 uint8 array."""
    if not path.is_file():
        raise ImageError(f"image file {path} does not exist")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except UnidentifiedImageError as e:
        raise ImageError(f"{path} is not an image PIL can read (PNG, JPEG, ...)") from e


def predict_from_files(checkpoint: pathlib.Path, image: pathlib.Path, instruction: str,
                       unnorm_key: str | None = None, quantization: str | None = None) -> np.ndarray:
    """Load a checkpoint and predict one action for an image file and an instruction."""
    model = OpenVLA.from_pretrained(checkpoint, quantization=quantization)
    return model.predict_action(load_image(image), instruction, unnorm_key)
