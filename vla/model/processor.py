"""Image and prompt processing, exactly as OpenVLA's processor, plus the training encoding.

Images: RGB, resized to the backbone size ignoring aspect ratio with PIL bicubic (what
torchvision's resize does to a PIL image), /255, normalized once per backbone, stacked on channels.
Prompt: `In: What action should the robot take to {instruction.lower()}?\nOut:` with BOS, then the
"▁" token that the action tokens follow in training.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer

from vla.errors import CheckpointError, ConfigError, ImageError, InstructionError
from vla.model.action_tokenizer import ActionTokenizer
from vla.model.vision import ImageNormalization

PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
SPACE_PIECE = "\u2581"  # SentencePiece's word-start marker; action tokens follow it in training
IGNORE_INDEX = -100  # label value cross-entropy skips
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def build_prompt(instruction: str) -> str:
    """The OpenVLA prompt for one instruction (lower-cased, nothing stripped)."""
    if not isinstance(instruction, str):
        raise InstructionError(f"instruction must be a str, got {type(instruction).__name__}")
    if not instruction.strip():
        raise InstructionError("instruction is empty; say what the robot should do, e.g. 'pick up the red block'")
    return PROMPT_TEMPLATE.format(instruction=instruction.lower())


def _token_content(value: Any) -> str:
    return value["content"] if isinstance(value, dict) else value


class PromptTokenizer:
    """The checkpoint's fast tokenizer (tokenizer.json) plus its special ids from tokenizer_config.json."""

    def __init__(self, files: dict[str, bytes]) -> None:
        missing = [f for f in ("tokenizer.json", "tokenizer_config.json") if f not in files]
        if missing:
            raise CheckpointError(f"tokenizer files {missing} are missing; copy them from the base checkpoint")
        self.files = dict(files)  # raw bytes, written back unchanged by save()
        self.tokenizer = Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
        cfg = json.loads(files["tokenizer_config.json"])
        self.bos_id = self._id(_token_content(cfg["bos_token"]))
        self.eos_id = self._id(_token_content(cfg["eos_token"]))
        self.pad_id = self._id(_token_content(cfg["pad_token"])) if cfg.get("pad_token") else None
        self.space_id = self._id(SPACE_PIECE)

    def _id(self, token: str) -> int:
        i = self.tokenizer.token_to_id(token)
        if i is None:
            raise CheckpointError(f"token {token!r} is not in tokenizer.json; the tokenizer files do not match")
        return i

    @classmethod
    def from_folder(cls, folder: pathlib.Path) -> "PromptTokenizer":
        """Read the tokenizer files of a checkpoint (or asset) folder."""
        return cls({name: (folder / name).read_bytes() for name in TOKENIZER_FILES if (folder / name).is_file()})

    def save(self, folder: pathlib.Path) -> None:
        """Write the tokenizer files unchanged."""
        for name, data in self.files.items():
            (folder / name).write_bytes(data)

    def encode(self, text: str) -> list[int]:
        """BOS + the text's ids, as the Llama tokenizer encodes with add_special_tokens."""
        return [self.bos_id] + self.tokenizer.encode(text, add_special_tokens=False).ids


@dataclasses.dataclass(frozen=True)
class ImageTransform:
    """Resize-naive + per-backbone normalization; optional centre crop for augmentation-trained models."""

    size: int
    normalizations: tuple[ImageNormalization, ...]
    center_crop_area: float | None = None

    def __post_init__(self) -> None:
        unknown = {n.interpolation for n in self.normalizations} - RESAMPLING.keys()
        if unknown:
            raise ConfigError(f"image interpolation {sorted(unknown)} is not supported; supported: {sorted(RESAMPLING)}")

    def to_pil(self, image: Any) -> Image.Image:
        """Validate one image (HxWx3 uint8 array or PIL image) and return it as RGB PIL."""
        if isinstance(image, Image.Image):
            return image.convert("RGB")
        if isinstance(image, torch.Tensor):
            raise ImageError("images must be HxWx3 uint8 numpy arrays or PIL images, got a torch.Tensor; "
                             "use tensor.cpu().numpy() (and permute CHW to HWC)")
        if not isinstance(image, np.ndarray):
            raise ImageError(f"images must be HxWx3 uint8 numpy arrays or PIL images, got {type(image).__name__}")
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ImageError(f"image has shape {image.shape}; expected HxWx3 (RGB, channels last)")
        if image.dtype != np.uint8:
            raise ImageError(f"image dtype is {image.dtype}; expected uint8 0..255 "
                             "(for floats in [0, 1] use (x * 255).round().astype(np.uint8))")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ImageError(f"image has shape {image.shape}; it is empty")
        return Image.fromarray(image, mode="RGB")

    def resize(self, img: Image.Image) -> np.ndarray:
        """uint8 [size, size, 3]: bicubic resize ignoring aspect ratio, then the optional centre crop."""
        side = (self.size, self.size)
        if img.size != side:
            img = img.resize(side, RESAMPLING[self.normalizations[0].interpolation])
        if self.center_crop_area is not None:
            # OpenVLA's eval of augmentation-trained models: crop sqrt(area) of each side, resize back
            crop = self.size * math.sqrt(self.center_crop_area)
            off = (self.size - crop) / 2
            img = img.resize(side, Image.Resampling.BILINEAR, box=(off, off, off + crop, off + crop))
        return np.asarray(img)

    def __call__(self, images: Sequence[Any]) -> torch.Tensor:
        """Images -> float32 [B, 3 * n_backbones, size, size]."""
        if len(images) == 0:
            raise ImageError("no images given")
        x = np.stack([self.resize(self.to_pil(im)) for im in images]).astype(np.float32) / np.float32(255.0)
        planes = [(x - np.asarray(n.mean, np.float32)) / np.asarray(n.std, np.float32) for n in self.normalizations]
        return torch.from_numpy(np.ascontiguousarray(np.concatenate(planes, axis=-1).transpose(0, 3, 1, 2)))


class OpenVLAProcessor:
    """Turns (images, instructions[, actions]) into model inputs, for prediction and for training."""

    def __init__(self, tokenizer: PromptTokenizer, image_transform: ImageTransform,
                 action_tokenizer: ActionTokenizer) -> None:
        self.tokenizer = tokenizer
        self.image_transform = image_transform
        self.action_tokenizer = action_tokenizer
        if tokenizer.pad_id is None:
            raise CheckpointError("tokenizer_config.json has no pad_token; OpenVLA checkpoints add <PAD>")

    def process_images(self, images: Sequence[Any]) -> torch.Tensor:
        """HxWx3 uint8 arrays or PIL images -> float32 pixel_values [B, 6, 224, 224]."""
        return self.image_transform(images)

    def prompt_ids(self, instruction: str) -> list[int]:
        """Prompt ids as `predict_action` feeds them: BOS + prompt, then "▁" unless already last."""
        ids = self.tokenizer.encode(build_prompt(instruction))
        if ids[-1] != self.tokenizer.space_id:
            ids.append(self.tokenizer.space_id)
        return ids

    def encode_prompts(self, instructions: Sequence[str]) -> dict[str, torch.Tensor]:
        """Left-padded prompt ids and attention mask for batched prediction."""
        rows = [self.prompt_ids(s) for s in instructions]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def encode_training(self, instructions: Sequence[str], normalized_actions: np.ndarray) -> dict[str, torch.Tensor]:
        """Right-padded ids = prompt + "▁" + action tokens + EOS; labels only on the actions and EOS."""
        actions = np.asarray(normalized_actions)
        if actions.ndim != 2 or actions.shape[0] != len(instructions):
            raise InstructionError(f"need one action row per instruction: {len(instructions)} instructions, "
                                   f"actions of shape {actions.shape} (expected [B, A])")
        # OpenVLA decoded action ids to text and re-tokenized "Out: <text></s>"; building the ids directly
        # gives the same sequence (prompt, "▁", 7 action ids, EOS) without a text round trip
        action_ids = self.action_tokenizer.encode(actions)
        rows, label_rows = [], []
        for instruction, acts in zip(instructions, action_ids):
            target = acts.tolist() + [self.tokenizer.eos_id]
            prompt = self.prompt_ids(instruction)
            rows.append(prompt + target)
            label_rows.append([IGNORE_INDEX] * len(prompt) + target)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (r, lab) in enumerate(zip(rows, label_rows)):
            ids[i, : len(r)] = torch.tensor(r)
            labels[i, : len(r)] = torch.tensor(lab)
            mask[i, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def preprocessor_config(self) -> dict[str, Any]:
        """preprocessor_config.json as the original PrismaticImageProcessor writes it."""
        t = self.image_transform
        n = len(t.normalizations)
        f32 = lambda v: [float(np.float32(x)) for x in v]  # noqa: E731 - torchvision stored float32 values
        return {
            "auto_map": {"AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor",
                         "AutoProcessor": "processing_prismatic.PrismaticProcessor"},
            "image_processor_type": "PrismaticImageProcessor",
            "image_resize_strategy": "resize-naive",
            "input_sizes": [[3, t.size, t.size]] * n,
            "interpolations": [m.interpolation for m in t.normalizations],
            "means": [list(m.mean) for m in t.normalizations],
            "processor_class": "PrismaticProcessor",
            "stds": [list(m.std) for m in t.normalizations],
            "tvf_crop_params": [{"output_size": [t.size, t.size]}] * n,
            "tvf_do_letterbox": False,
            "tvf_letterbox_fill": None,
            "tvf_normalize_params": [{"inplace": False, "mean": f32(m.mean), "std": f32(m.std)}
                                     for m in t.normalizations],
            "tvf_resize_params": [{"antialias": True, "interpolation": 3, "max_size": None,
                                   "size": [t.size, t.size]}] * n,
            "use_fused_vision_backbone": n > 1,
        }
