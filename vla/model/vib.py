"""Variational information bottleneck (VIB) on projected patch tokens, and per-role image embeddings.

Hsu, Kim et al. (ICLR 2022, "Vision-based manipulators need to also see from their hands"): the
third-person stream overfits, so its encoder outputs a Gaussian per feature, a sample
z = mu + sigma * eps is what the policy sees during training, and beta * KL(N(mu, sigma^2) || N(0, I))
joins the loss. As their code does, the KL is summed over feature dims and averaged over the rest
(here: over batch and patch tokens). Evaluation uses mu unless `sample` is asked for (their code
samples; a deterministic policy is easier to compare and serve).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from vla.errors import ConfigError

# log-sigma lives in [LOG_SIGMA_MIN, LOG_SIGMA_MAX] through a tanh squash (DrQ-v2's actor does the
# same): a hard clamp would cut the gradient at the bounds, an unbounded one lets sigma -> 0 (KL -> inf)
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -10.0, 2.0
# at initialisation sigma = e^-5: mu (initialised to the identity) passes the features almost untouched,
# so adding a bottleneck to a trained projector starts from the same policy
INIT_LOG_SIGMA = -5.0


@dataclasses.dataclass(frozen=True)
class VIBOutput:
    """What the bottleneck produced for one batch of tokens."""

    z: torch.Tensor  # [..., D]: the sample when training (or asked to sample), else mu
    mu: torch.Tensor  # [..., D]
    log_sigma: torch.Tensor  # [..., D], already squashed into [LOG_SIGMA_MIN, LOG_SIGMA_MAX]
    kl: torch.Tensor  # scalar: KL to N(0, I), summed over D, mean over all other dims


def squash_log_sigma(raw: torch.Tensor) -> torch.Tensor:
    """Map an unbounded value into [LOG_SIGMA_MIN, LOG_SIGMA_MAX] smoothly (tanh)."""
    return LOG_SIGMA_MIN + 0.5 * (LOG_SIGMA_MAX - LOG_SIGMA_MIN) * (torch.tanh(raw) + 1)


def _unsquash(value: float) -> float:
    """The raw value whose squash is `value` (for initialising the bias)."""
    t = 2 * (value - LOG_SIGMA_MIN) / (LOG_SIGMA_MAX - LOG_SIGMA_MIN) - 1
    return float(torch.atanh(torch.tensor(t)))


def gaussian_kl(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over the last dim and averaged over all others."""
    dtype = torch.promote_types(mu.dtype, torch.float32)  # bf16 halves would lose the sum's precision
    mu, log_sigma = mu.to(dtype), log_sigma.to(dtype)
    per_dim = 0.5 * (mu.square() + torch.exp(2 * log_sigma) - 1) - log_sigma
    return per_dim.sum(-1).mean()


class VIBHead(nn.Module):
    """Per-token Gaussian bottleneck D -> (mu, log-sigma) -> z, in the same D-dim space."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ConfigError(f"a VIB head needs a feature width >= 1, got {dim}")
        self.mu = nn.Linear(dim, dim)
        self.log_sigma = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mu = identity, log-sigma = INIT_LOG_SIGMA everywhere (see the constant for why)."""
        with torch.no_grad():
            if self.mu.weight.device.type == "meta":
                return
            nn.init.eye_(self.mu.weight)
            nn.init.zeros_(self.mu.bias)
            nn.init.zeros_(self.log_sigma.weight)
            nn.init.constant_(self.log_sigma.bias, _unsquash(INIT_LOG_SIGMA))

    def forward(self, x: torch.Tensor, sample: bool, generator: torch.Generator | None = None) -> VIBOutput:
        """Bottleneck `x` [..., D]; `sample` draws z = mu + sigma * eps (training), else z = mu."""
        mu = self.mu(x)
        log_sigma = squash_log_sigma(self.log_sigma(x))
        if sample:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + torch.exp(log_sigma) * eps
        else:
            z = mu
        return VIBOutput(z, mu, log_sigma, gaussian_kl(mu, log_sigma))


def add_kl_term(loss: torch.Tensor, kl: torch.Tensor, config: Any) -> torch.Tensor:
    """`loss` + vib_beta * `kl` for a model with bottleneck roles; `loss` unchanged without them."""
    return loss + config.vib_beta * kl if config.vib_roles else loss


def check_vib_beta(beta: float) -> float:
    """The KL weight, refused when negative or not finite (a negative beta rewards information)."""
    if not (beta == beta and abs(beta) != float("inf")) or beta < 0:
        raise ConfigError(f"vib_beta must be a finite number >= 0, got {beta}; the paper's default is 1, "
                          "tune it on in-distribution validation data (e.g. 1e-4..1e-1)")
    return float(beta)
