"""The V-GPS Q-function: Q(image, instruction, action) with FiLM language conditioning and 2 critics.

The encoder sees the primary camera only (no proprio, as in V-GPS). Language is the policy's Llama
tokenizer feeding a learned embedding bag (no sentence encoder can be downloaded here), or, with
`text_encoder="dataset-embedding"`, a linear layer on the 512-d `language_embedding` that Bridge
shards carry per step (then `.score()` must be given that vector); it modulates every encoder
stage with FiLM. Actions are normalized with the critic's own bounds, so
candidates from any policy (un-normalized with that policy's statistics) are comparable.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import logging
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from torch import nn

from vla.vgps.config import EMBEDDING_KEY, TEXT_ENCODERS, ActionBounds, QConfig, get_preset
from vla.vgps.errors import MismatchError, QCheckpointError, QInputError, ScoreError

logger = logging.getLogger(__name__)

CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"
FORMAT = "vla-vgps-q/1"  # written into config.json; bump when the folder layout changes
TOKENIZER_ASSET = "assets/llama2-tokenizer/tokenizer.json"  # inside vla.model: the policy's own tokenizer
TEXT_ENCODER = "llama-tokenizer+embedding-bag"
DATASET_EMBEDDING = "dataset-embedding"  # QConfig.text_encoder value and the folder's text-encoder kind
EMBEDDING_SOURCE = "Universal Sentence Encoder Large v5, as the dataset's shards carry it (not computed here)"
PIXEL_SCALE = 255.0  # uint8 -> [0, 1]


def policy_tokenizer_json() -> str:
    """The policy's Llama tokenizer.json text, as shipped in `vla/model/assets/`."""
    ref = importlib.resources.files("vla.model").joinpath(TOKENIZER_ASSET)
    return ref.read_text(encoding="utf-8")


class _GroupNorm(nn.GroupNorm):
    """GroupNorm with BatchNorm's call signature, so timm's ResNet can take it as `norm_layer`."""

    def __init__(self, num_channels: int, groups: int, **kwargs: Any) -> None:
        super().__init__(min(groups, num_channels), num_channels, **kwargs)


class FiLM(nn.Module):
    """x * (1 + gamma(z)) + beta(z): identity at initialization, so language starts as a gentle nudge."""

    def __init__(self, text_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(text_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(z)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + gamma) + beta


class Encoder(nn.Module):
    """Image [B, 3, H, W] in [0, 1] + language [B, text_dim] -> features [B, out_dim]."""

    def __init__(self, config: QConfig) -> None:
        super().__init__()
        norm = functools.partial(_GroupNorm, groups=config.norm_groups)
        if config.encoder == "conv":
            chans, stages, prev = config.conv_channels, [], 3
            for c in chans:
                stages.append(nn.Sequential(nn.Conv2d(prev, c, 3, stride=2, padding=1), norm(c), nn.ReLU()))
                prev = c
            self.stem = nn.Identity()
            self.stages = nn.ModuleList(stages)
        elif config.encoder == "resnet34":
            import timm

            net = timm.create_model("resnet34", pretrained=False, num_classes=0, norm_layer=norm)
            chans = tuple(net.feature_info[i]["num_chs"] for i in range(1, 5))
            self.stem = nn.Sequential(net.conv1, net.bn1, net.act1, net.maxpool)
            self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        else:
            raise QCheckpointError(f"unknown encoder {config.encoder!r}; use 'conv' or 'resnet34'")
        self.films = nn.ModuleList([FiLM(config.text_dim, c) for c in chans])
        self.out_dim = chans[-1]

    def forward(self, pixels: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixels - 0.5)
        for stage, film in zip(self.stages, self.films):
            x = film(stage(x), text)
        return x.mean(dim=(2, 3))


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers with ReLU between (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class QFunction(nn.Module):
    """Q(s, a, instruction) with `n_critics` heads on one FiLM-conditioned image encoder."""

    def __init__(self, config: QConfig, bounds: ActionBounds, tokenizer_json: str | None = None,
                 info: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if len(bounds.low) != config.action_dim or len(bounds.high) != config.action_dim:
            raise QCheckpointError(f"action bounds have {len(bounds.low)}/{len(bounds.high)} dims but the config says "
                                   f"action_dim={config.action_dim}; recompute the bounds for this action space")
        if any(h <= l for l, h in zip(bounds.low, bounds.high)):
            raise QCheckpointError(f"action bounds need high > low in every dim; got low={bounds.low} high={bounds.high}")
        if config.text_encoder not in TEXT_ENCODERS:
            raise QCheckpointError(f"unknown text_encoder {config.text_encoder!r}; use one of {TEXT_ENCODERS}")
        self.config, self.bounds = config, bounds
        self.info = dict(info or {})  # dataset names, reward, algorithm: what this critic was trained on
        self.tokenizer_json: str | None = None
        self.tokenizer: Tokenizer | None = None
        if self.uses_embedding:
            self.text_proj = nn.Linear(config.embedding_dim, config.text_dim)
        else:
            self.tokenizer_json = tokenizer_json if tokenizer_json is not None else policy_tokenizer_json()
            self.tokenizer = Tokenizer.from_str(self.tokenizer_json)
            self.embed = nn.EmbeddingBag(self.tokenizer.get_vocab_size(), config.text_dim, mode="mean",
                                         sparse=True)  # a batch touches a few dozen of 32k rows: sparse grads
        self.encoder = Encoder(config)
        self.critics = nn.ModuleList(
            [mlp((self.encoder.out_dim + config.action_dim, *config.hidden, 1)) for _ in range(config.n_critics)])
        self._token_cache: dict[str, list[int]] = {}  # per instance: instructions repeat every step
        self.register_buffer("low", torch.tensor(bounds.low, dtype=torch.float32), persistent=False)
        self.register_buffer("high", torch.tensor(bounds.high, dtype=torch.float32), persistent=False)

    @classmethod
    def from_preset(cls, name: str, bounds: ActionBounds, seed: int = 0, info: Mapping[str, Any] | None = None,
                    **overrides: Any) -> "QFunction":
        """A randomly initialized Q-function of preset `name` (fields overridable, e.g. action_dim)."""
        config = dataclasses.replace(get_preset(name), **overrides)
        torch.manual_seed(seed)
        return cls(config, bounds, info=info)

    @property
    def device(self) -> torch.device:
        return self.low.device

    @property
    def uses_embedding(self) -> bool:
        """Whether language comes in as the dataset's `language_embedding` vector, not as text."""
        return self.config.text_encoder == DATASET_EMBEDDING

    # ---- inputs ---------------------------------------------------------------------------------
    def token_ids(self, instruction: str) -> list[int]:
        """Token ids of one instruction (lower-cased and stripped, as the data varies in both)."""
        if not isinstance(instruction, str) or not instruction.strip():
            raise QInputError(f"instruction must be a non-empty string, got {instruction!r}")
        if instruction not in self._token_cache:
            ids = self.tokenizer.encode(instruction.strip().lower(), add_special_tokens=False).ids
            if not ids:
                raise QInputError(f"instruction {instruction!r} has no tokens")
            self._token_cache[instruction] = ids
        return self._token_cache[instruction]

    def embed_text(self, instructions: Sequence[str]) -> torch.Tensor:
        """Instructions -> [B, text_dim] mean token embeddings."""
        ids = [self.token_ids(s) for s in instructions]
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long, device=self.device)
        offsets = torch.tensor(np.cumsum([0] + [len(r) for r in ids[:-1]]), dtype=torch.long, device=self.device)
        return self.embed(flat, offsets)

    def embedding_tensor(self, embeddings: Any, batch: int) -> torch.Tensor | None:
        """Checked language embeddings ([D] or [B, D]) -> float [B, D] on the device; None for a tokenizer Q."""
        if not self.uses_embedding:
            if embeddings is not None:
                raise QInputError(f"this Q-function embeds the instruction text with its tokenizer; it takes no "
                                  f"{EMBEDDING_KEY} (train with --language dataset-embedding to use one)")
            return None
        if embeddings is None:
            raise QInputError(
                f"this Q-function FiLMs on the dataset's {self.config.embedding_dim}-d {EMBEDDING_KEY} "
                f"({EMBEDDING_SOURCE}) and no sentence encoder can be downloaded here to embed an instruction string; pass "
                f"{EMBEDDING_KEY}=<the vector of that instruction, e.g. from its dataset step>, or train Q with "
                "--language tokenizer")
        e = np.asarray(embeddings, dtype=np.float32)
        e = e[None] if e.ndim == 1 else e
        if e.shape != (batch, self.config.embedding_dim):
            raise QInputError(f"{EMBEDDING_KEY} must be [{self.config.embedding_dim}] (or one per observation, "
                              f"[{batch}, {self.config.embedding_dim}]); got shape {np.shape(embeddings)}")
        if not np.isfinite(e).all():
            raise QInputError(f"{EMBEDDING_KEY} contains NaN or inf; check where the vector came from")
        return torch.from_numpy(e).to(self.device)

    def text_features(self, instructions: Sequence[str], embeddings: torch.Tensor | None) -> torch.Tensor:
        """[B, text_dim] language for FiLM: projected embeddings [B, D], or the instructions' embedding bag."""
        return self.text_proj(embeddings) if self.uses_embedding else self.embed_text(instructions)

    def resize(self, image: Any) -> np.ndarray:
        """One HxWx3 uint8 image -> image_size x image_size uint8 (area interpolation)."""
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise QInputError(f"an image must be uint8 [H, W, 3]; got dtype {arr.dtype} shape {arr.shape}")
        size = self.config.image_size
        if arr.shape[:2] == (size, size):
            return arr
        return cv2.resize(arr, (size, size), interpolation=cv2.INTER_AREA)

    def pick_image(self, images: Any) -> np.ndarray:
        """The critic's camera out of a dict by role, or a lone image."""
        if isinstance(images, Mapping):
            if self.config.camera not in images:
                raise MismatchError(f"the Q-function looks at camera role {self.config.camera!r} but the observation "
                                    f"has {sorted(images)}; give that role (rig) or train Q on these cameras")
            return images[self.config.camera]
        return images

    def pixels(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Resized uint8 images [B, S, S, 3] -> float [B, 3, S, S] in [0, 1]."""
        arr = np.stack([self.resize(im) for im in images])
        return torch.from_numpy(arr).to(self.device).permute(0, 3, 1, 2).float() / PIXEL_SCALE

    def normalize_actions(self, actions: Any) -> torch.Tensor:
        """Actions in the robot's units [..., A] -> the critic's [-1, 1] scale (not clipped)."""
        a = torch.as_tensor(np.asarray(actions, dtype=np.float32), device=self.device)
        if a.shape[-1] != self.config.action_dim:
            raise MismatchError(f"actions have {a.shape[-1]} dims but this Q-function was trained on "
                                f"{self.config.action_dim}; use a Q-function trained on this action space")
        return 2 * (a - self.low) / (self.high - self.low) - 1

    # ---- network --------------------------------------------------------------------------------
    def features(self, pixels: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Encoder features [B, F] of float images and text embeddings."""
        return self.encoder(pixels, text)

    def q_values(self, features: torch.Tensor, norm_actions: torch.Tensor) -> torch.Tensor:
        """Every critic's Q [n_critics, B, N] for features [B, F] and normalized actions [B, N, A]."""
        feats = features[:, None, :].expand(-1, norm_actions.shape[1], -1)
        x = torch.cat([feats, norm_actions], dim=-1)
        return torch.stack([c(x).squeeze(-1) for c in self.critics])

    # ---- scoring --------------------------------------------------------------------------------
    @torch.inference_mode()
    def score(self, images: Any, instruction: str | None, actions: Any, *,
              language_embedding: Any = None) -> np.ndarray:
        """Q [K] of K candidate actions [K, A] (robot units) for one observation (min over critics)."""
        a = np.asarray(actions, dtype=np.float32)
        if a.ndim != 2 or a.shape[0] < 1:
            raise QInputError(f"actions must be [K>=1, {self.config.action_dim}]; got shape {a.shape}")
        if not np.isfinite(a).all():
            raise QInputError("candidate actions contain NaN or inf; check the policy's output")
        text = self.text_features([instruction], self.embedding_tensor(language_embedding, 1))
        feats = self.features(self.pixels([self.pick_image(images)]), text)
        q = self.q_values(feats, self.normalize_actions(a)[None]).min(0).values[0]
        return self._checked(q)

    @torch.inference_mode()
    def score_batch(self, images: Sequence[np.ndarray], instructions: Sequence[str], actions: Any, *,
                    language_embeddings: Any = None) -> np.ndarray:
        """Q [B] of one action per observation: images [B] (HxWx3), instructions [B], actions [B, A]."""
        a = np.asarray(actions, dtype=np.float32)
        if a.ndim != 2 or not len(images) == len(instructions) == a.shape[0]:
            raise QInputError(f"got {len(images)} images, {len(instructions)} instructions and actions {a.shape}; "
                              "give one of each per observation")
        text = self.text_features(instructions, self.embedding_tensor(language_embeddings, len(images)))
        feats = self.features(self.pixels(images), text)
        return self._checked(self.q_values(feats, self.normalize_actions(a)[:, None]).min(0).values[:, 0])

    def _checked(self, q: torch.Tensor) -> np.ndarray:
        out = q.float().cpu().numpy()
        if not np.isfinite(out).all():
            raise ScoreError(f"the Q-function returned non-finite scores {out}; its weights are broken — retrain it "
                             "(lower --lr) or reload a good checkpoint")
        return out

    # ---- folders --------------------------------------------------------------------------------
    def text_encoder_spec(self) -> dict[str, Any]:
        """What turns language into the FiLM vector, as config.json records it."""
        if self.uses_embedding:
            return {"kind": DATASET_EMBEDDING, "key": EMBEDDING_KEY, "dim": self.config.embedding_dim,
                    "source": EMBEDDING_SOURCE, "score_needs": EMBEDDING_KEY}
        return {"kind": TEXT_ENCODER, "tokenizer": TOKENIZER_FILE, "vocab_size": self.tokenizer.get_vocab_size()}

    def save_pretrained(self, path: str | pathlib.Path) -> None:
        """Write config.json (config, bounds, text encoder, training info), model.safetensors, tokenizer.json."""
        path = pathlib.Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "q_config": dataclasses.asdict(self.config),
            "action_bounds": {"low": list(self.bounds.low), "high": list(self.bounds.high)},
            "text_encoder": self.text_encoder_spec(),
            "info": self.info,
        }
        (path / CONFIG_FILE).write_text(json.dumps(meta, indent=1))
        if self.tokenizer_json is not None:
            (path / TOKENIZER_FILE).write_text(self.tokenizer_json, encoding="utf-8")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(path / WEIGHTS_FILE))

    @classmethod
    def from_pretrained(cls, path: str | pathlib.Path, device: str | torch.device = "cpu") -> "QFunction":
        """Load a folder written by `save_pretrained` (strict: every key and shape must match)."""
        path = pathlib.Path(path)
        _require_files(path, (CONFIG_FILE, WEIGHTS_FILE))
        try:
            meta = json.loads((path / CONFIG_FILE).read_text())
            if meta.get("format") != FORMAT:
                raise QCheckpointError(f"{path} is not a Q-function folder: its {CONFIG_FILE} has format "
                                       f"{meta.get('format')!r}, not {FORMAT!r} (a policy checkpoint?); pass the "
                                       "folder `vla vgps train --out` wrote")
            raw = meta["q_config"]
            config = QConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
            bounds = ActionBounds(tuple(meta["action_bounds"]["low"]), tuple(meta["action_bounds"]["high"]))
            kind = meta["text_encoder"]["kind"]
            expected = DATASET_EMBEDDING if config.text_encoder == DATASET_EMBEDDING else TEXT_ENCODER
            if kind != expected:
                raise QCheckpointError(f"text encoder {kind!r} is not supported with q_config.text_encoder "
                                       f"{config.text_encoder!r} (this code reads {expected!r}); re-save the folder")
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise QCheckpointError(f"{path / CONFIG_FILE} is malformed ({type(e).__name__}: {e}); re-save it") from e
        tokenizer_json = None
        if kind == TEXT_ENCODER:
            _require_files(path, (TOKENIZER_FILE,))
            tokenizer_json = (path / TOKENIZER_FILE).read_text(encoding="utf-8")
        q = cls(config, bounds, tokenizer_json, meta.get("info", {}))
        tensors, want = load_file(str(path / WEIGHTS_FILE)), q.state_dict()
        extra, lost = tensors.keys() - want.keys(), want.keys() - tensors.keys()
        bad = [k for k in want.keys() & tensors.keys() if want[k].shape != tensors[k].shape]
        if extra or lost or bad:
            raise QCheckpointError(f"{path / WEIGHTS_FILE} does not fit its config: missing {sorted(lost)[:3]}, "
                                   f"extra {sorted(extra)[:3]}, shape mismatch {bad[:3]}")
        q.load_state_dict(tensors, strict=True)
        return q.to(device).eval()


def _require_files(path: pathlib.Path, names: Sequence[str]) -> None:
    """Raise QCheckpointError naming the files of a Q-function folder that `path` lacks."""
    missing = [f for f in names if not (path / f).is_file()]
    if missing:
        raise QCheckpointError(f"{path} is not a Q-function folder: {missing} missing; train one with "
                               "`vla vgps train --out DIR`")
