"""The VIB head: KL against torch.distributions, deterministic evaluation, sampling, bounds, errors."""
from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vla.errors import ConfigError
from vla.model.vib import (INIT_LOG_SIGMA, LOG_SIGMA_MAX, LOG_SIGMA_MIN, VIBHead, check_vib_beta, gaussian_kl,
                           squash_log_sigma)


def test_kl_equals_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 5, 8, generator=g, dtype=torch.float64)
    log_sigma = torch.randn(3, 5, 8, generator=g, dtype=torch.float64)
    post = Independent(Normal(mu, log_sigma.exp()), 1)
    prior = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    want = kl_divergence(post, prior).mean()  # summed over dims by Independent, mean over tokens
    assert torch.allclose(gaussian_kl(mu, log_sigma).double(), want, atol=1e-6, rtol=0)


def test_head_kl_is_the_kl_of_its_own_mu_and_sigma():
    torch.manual_seed(1)
    head = VIBHead(6)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.5)
    out = head(torch.randn(2, 4, 6), sample=True)
    want = kl_divergence(Normal(out.mu, out.log_sigma.exp()), Normal(0.0, 1.0)).sum(-1).mean()
    assert abs(out.kl.item() - want.item()) < 1e-5


def test_evaluation_is_deterministic_and_uses_mu():
    torch.manual_seed(2)
    head = VIBHead(4)
    x = torch.randn(2, 3, 4)
    a, b = head(x, sample=False), head(x, sample=False)
    assert torch.equal(a.z, b.z) and torch.equal(a.z, a.mu)
    # a fresh head is the identity on the mean: a bottleneck added to a trained projector keeps its policy
    assert torch.allclose(a.mu, x)
    assert torch.allclose(a.log_sigma, torch.full_like(x, INIT_LOG_SIGMA), atol=1e-5)


def test_sampling_draws_from_the_posterior():
    head = VIBHead(2)
    with torch.no_grad():
        head.log_sigma.bias.fill_(0.0)  # raw 0 -> squashed to the middle of the range
    x = torch.zeros(20000, 2)
    out = head(x, sample=True, generator=torch.Generator().manual_seed(3))
    sigma = float(squash_log_sigma(torch.tensor(0.0)).exp())
    assert abs(float(out.z.mean().detach())) < 0.05 * sigma
    assert abs(float(out.z.std().detach()) / sigma - 1) < 0.03
    again = head(x, sample=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out.z, again.z)  # a seeded generator repeats the draw


def test_log_sigma_is_bounded_and_keeps_gradients():
    raw = torch.tensor([-1e4, -1.0, 0.0, 1.0, 1e4], requires_grad=True)
    squashed = squash_log_sigma(raw)
    assert float(squashed.detach().min()) >= LOG_SIGMA_MIN and float(squashed.detach().max()) <= LOG_SIGMA_MAX
    squashed[1:4].sum().backward()
    assert (raw.grad[1:4] > 0).all()


def test_kl_gradient_pulls_towards_the_prior():
    torch.manual_seed(4)
    head = VIBHead(3)
    opt = torch.optim.SGD(head.parameters(), lr=0.05)
    x = torch.randn(16, 3)
    first = float(head(x, sample=True).kl.detach())
    for _ in range(50):
        opt.zero_grad()
        head(x, sample=True).kl.backward()
        opt.step()
    assert float(head(x, sample=True).kl.detach()) < 0.5 * first


@pytest.mark.parametrize("beta", [-1e-3, float("nan"), float("inf")])
def test_bad_beta_is_refused(beta):
    with pytest.raises(ConfigError, match="vib_beta"):
        check_vib_beta(beta)


def test_zero_width_is_refused():
    with pytest.raises(ConfigError, match="width"):
        VIBHead(0)
