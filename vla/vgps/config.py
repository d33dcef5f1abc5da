"""Named presets for the V-GPS Q-function, the critic's action bounds, and offline-RL settings."""
from __future__ import annotations

import dataclasses
import difflib
from typing import Literal

from vla.vgps.errors import UnknownPresetError


@dataclasses.dataclass(frozen=True)
class QConfig:
    """Shape of a Q-function: conv encoder + FiLM on a language embedding + `n_critics` MLP heads."""

    encoder: Literal["conv", "resnet34"] = "resnet34"  # "conv": a small strided conv net; "resnet34": timm's
    conv_channels: tuple[int, ...] = (32, 64, 128)  # per stage of the "conv" encoder (stride 2 each)
    image_size: int = 256  # the primary camera is resized to image_size x image_size (V-GPS: 256)
    text_dim: int = 512  # width of the language embedding that drives FiLM (V-GPS: 512-d sentence embedding)
    hidden: tuple[int, ...] = (256, 256)  # MLP widths of each critic head (and the IQL value head)
    n_critics: int = 2
    action_dim: int = 7
    camera: str = "primary"  # the camera role the critic looks at (V-GPS: primary, no proprio)
    norm_groups: int = 8  # GroupNorm groups in the encoder (batch statistics would leak across an RL batch)
    # "tokenizer": the policy's Llama tokenizer + a learned embedding bag; "dataset-embedding": a linear layer on
    # the per-step `language_embedding` the dataset carries (Bridge: Universal Sentence Encoder Large, 512-d)
    text_encoder: Literal["tokenizer", "dataset-embedding"] = "tokenizer"
    embedding_dim: int = 512  # width of the dataset's language_embedding (dataset-embedding only)


TEXT_ENCODERS = ("tokenizer", "dataset-embedding")
EMBEDDING_KEY = "language_embedding"  # the per-step RLDS feature the dataset-embedding text encoder reads

PRESETS: dict[str, QConfig] = {
    "vgps-resnet34": QConfig(),  # the paper's network: ResNet-34 + FiLM, 256 px, 512-d language
    "tiny": QConfig(encoder="conv", conv_channels=(16, 32, 32), image_size=32, text_dim=32, hidden=(64, 64),
                    norm_groups=4),
}


def get_preset(name: str) -> QConfig:
    """The QConfig registered as `name`; unknown names raise with the known ones."""
    if name not in PRESETS:
        near = difflib.get_close_matches(name, PRESETS, n=1)
        raise UnknownPresetError(f"no Q-function preset {name!r}; did you mean {near}? known: {sorted(PRESETS)}")
    return PRESETS[name]


@dataclasses.dataclass(frozen=True)
class ActionBounds:
    """The critic's own action normalization: [low, high] maps to [-1, 1] per dimension (never clipped)."""

    low: tuple[float, ...]
    high: tuple[float, ...]


# V-GPS normalizes Bridge actions with fixed bounds: +-5 cm, +-0.25 rad, gripper [0, 1]
NAMED_BOUNDS: dict[str, ActionBounds] = {
    "bridge": ActionBounds(low=(-0.05, -0.05, -0.05, -0.25, -0.25, -0.25, 0.0),
                           high=(0.05, 0.05, 0.05, 0.25, 0.25, 0.25, 1.0)),
}

ALGOS = ("calql", "cql", "iql")  # cql: Cal-QL without the Monte-Carlo lower bound (the ablation)
REWARDS = ("last-h", "success")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Offline RL settings; defaults follow V-GPS (Cal-QL alpha 5, 4 actions, max backup, gamma 0.98)."""

    algo: Literal["calql", "cql", "iql"] = "calql"
    reward: Literal["last-h", "success"] = "last-h"  # last-h: last H steps of every episode; success: only successful ones
    horizon: int = 3  # H: how many final steps are positive and terminal
    positive_reward: float = 1.0  # paper: +1 / 0 (the released code since Feb 2025 uses 0 / -1)
    negative_reward: float = 0.0
    gamma: float = 0.98
    steps: int = 2000
    batch_size: int = 256
    lr: float = 3e-4
    cql_alpha: float = 5.0
    cql_actions: int = 4  # sampled actions per state for the CQL term and the max target backup
    expectile: float = 0.7  # IQL
    tau: float = 0.005  # Polyak rate of the target critic
    bounds: str = "data"  # "data": q01/q99 of the training actions; or a name in NAMED_BOUNDS
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 1  # torch intra-op threads while training (small convs on shared cores thrash with more); None: torch's own
