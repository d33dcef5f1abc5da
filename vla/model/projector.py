"""MLP projector from vision patch features into the Llama embedding space."""
from __future__ import annotations

import torch
from torch import nn

from vla.errors import ConfigError


class FusedMLPProjector(nn.Module):
    """OpenVLA's `fused-gelu-mlp`: fc1 (vision -> 4 x vision), GELU, fc2 (-> llm), GELU, fc3 (llm -> llm)."""

    def __init__(self, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        hidden = 4 * vision_dim  # the original's `initial_projection_dim`
        self.fc1 = nn.Linear(vision_dim, hidden)
        self.fc2 = nn.Linear(hidden, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()  # exact (erf) GELU, as the original

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act(self.fc2(self.act(self.fc1(patches)))))


class MLPProjector(nn.Module):
    """Prismatic's `gelu-mlp` (single backbone): fc1 (vision -> llm), GELU, fc2 (llm -> llm)."""

    def __init__(self, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, llm_dim)
        self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(patches)))


# arch_specifier suffix -> projector class (the "no-align+" prefix names a training stage only)
PROJECTORS: dict[str, type[nn.Module]] = {
    "fused-gelu-mlp": FusedMLPProjector,
    "gelu-mlp": MLPProjector,
}


def build_projector(arch_specifier: str, vision_dim: int, llm_dim: int) -> nn.Module:
    """The projector named by a config's `arch_specifier`."""
    kind = arch_specifier.removeprefix("no-align+")
    if kind not in PROJECTORS:
        raise ConfigError(f"arch_specifier {arch_specifier!r} names no known projector; known: {sorted(PROJECTORS)}")
    return PROJECTORS[kind](vision_dim, llm_dim)
