"""Offline RL for the V-GPS critic in PyTorch: Cal-QL (and CQL, its ablation) and IQL.

Cal-QL (Nakamoto et al., 2023) = CQL with importance-sampled logsumexp over random and policy
actions (alpha 5, 4 actions each, max target backup, 2 critics), where Q of policy actions is
lower-bounded by the data's Monte-Carlo return before the logsumexp. The SAC actor only supplies
CQL's policy actions and the backup; it reads the critic's encoder features without gradient, so
one encoder pass per state serves every head. IQL (Kostrikov et al., 2021) fits V by expectile
regression on target Q and Q on r + gamma * V(s'); it needs no actor.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import pathlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vla.vgps.config import ALGOS, REWARDS, TEXT_ENCODERS, ActionBounds, TrainConfig
from vla.vgps.data import Transitions, action_bounds, load_transitions
from vla.vgps.errors import TrainingDataError, UnknownPresetError
from vla.vgps.qfunction import QFunction, mlp

logger = logging.getLogger(__name__)

LOG_STD_RANGE = (-5.0, 2.0)  # SAC's usual clamp of the actor's log std
LOG_EVERY = 100  # steps between logged metrics


class TanhGaussianActor(nn.Module):
    """SAC policy on (detached) critic features: tanh of a diagonal Gaussian, in the critic's [-1, 1] scale."""

    def __init__(self, feature_dim: int, action_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = mlp((feature_dim, *hidden, 2 * action_dim))

    def sample(self, features: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n reparameterized actions [B, n, A] and their log densities [B, n]."""
        mean, log_std = self.net(features).chunk(2, dim=-1)
        std = log_std.clamp(*LOG_STD_RANGE).exp()
        eps = torch.randn(features.shape[0], n, mean.shape[-1], device=features.device)
        pre = mean[:, None] + std[:, None] * eps
        action = torch.tanh(pre)
        normal_logp = (-0.5 * eps.pow(2) - std.log()[:, None] - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log|d tanh/dx| = 2 (log 2 - x - softplus(-2x)), the numerically stable form
        jacobian = (2 * (math.log(2) - pre - F.softplus(-2 * pre))).sum(-1)
        return action, normal_logp - jacobian


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """IQL's asymmetric squared loss on diff = target - prediction."""
    weight = torch.where(diff > 0, expectile, 1 - expectile)
    return (weight * diff.pow(2)).mean()


@dataclasses.dataclass(frozen=True)
class Batch:
    pixels: torch.Tensor
    next_pixels: torch.Tensor
    text_ids: list[str]
    actions: torch.Tensor  # normalized with the critic's bounds
    rewards: torch.Tensor
    dones: torch.Tensor
    mc_returns: torch.Tensor
    embeddings: torch.Tensor | None  # [B, D] language_embedding (dataset-embedding critics only)


class Learner:
    """One critic, its target copy, and the algorithm's extra heads and optimizers."""

    def __init__(self, q: QFunction, config: TrainConfig) -> None:
        if config.algo not in ALGOS:
            raise UnknownPresetError(f"no algorithm {config.algo!r}; use one of {ALGOS}")
        self.q, self.config = q, config
        self.target = copy.deepcopy(q).requires_grad_(False)
        dense = [p for n, p in q.named_parameters() if not n.startswith("embed.")]
        sparse = [p for n, p in q.named_parameters() if n.startswith("embed.")]
        self.q_opt = torch.optim.Adam(dense, lr=config.lr)
        # a dataset-embedding critic has no embedding bag: its text projection is dense
        self.embed_opt = torch.optim.SparseAdam(sparse, lr=config.lr) if sparse else None
        dim, feat, hidden = q.config.action_dim, q.encoder.out_dim, q.config.hidden
        dev = q.device
        if config.algo == "iql":
            self.value = mlp((feat, *hidden, 1)).to(dev)
            self.q_opt.add_param_group({"params": list(self.value.parameters())})
        else:
            self.actor = TanhGaussianActor(feat, dim, hidden).to(dev)
            self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
            self.log_alpha = torch.zeros((), device=dev, requires_grad=True)
            self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=config.lr)
            self.target_entropy = -float(dim)

    def step(self, b: Batch) -> dict[str, float]:
        """One gradient step on every part; returns scalar metrics."""
        text = self.q.text_features(b.text_ids, b.embeddings)
        feats = self.q.features(b.pixels, text)
        q_data = self.q.q_values(feats, b.actions[:, None])[..., 0]  # [C, B]
        metrics = self._iql(b, text, feats, q_data) if self.config.algo == "iql" else self._cql(b, text, feats, q_data)
        with torch.no_grad():
            for p, tp in zip(self.q.parameters(), self.target.parameters()):
                tp.lerp_(p, self.config.tau)
        return metrics

    def _cql(self, b: Batch, text: torch.Tensor, feats: torch.Tensor, q_data: torch.Tensor) -> dict[str, float]:
        c, n = self.config, self.config.cql_actions
        with torch.no_grad():  # the actor at s' reads target features: one encoder pass fewer per step
            target_feats = self.target.features(b.next_pixels, self.target.text_features(b.text_ids, b.embeddings))
            next_a, next_logp = self.actor.sample(target_feats, n)
            backup = self.target.q_values(target_feats, next_a).min(0).values.max(-1).values  # max target backup
            y = b.rewards + c.gamma * (1 - b.dones) * backup
            cur_a, cur_logp = self.actor.sample(feats.detach(), n)
            rand_a = torch.empty_like(cur_a).uniform_(-1, 1)
        td = F.mse_loss(q_data, y[None].expand_as(q_data), reduction="none").mean(1).sum()
        q_rand = self.q.q_values(feats, rand_a)
        q_cur, q_next = self.q.q_values(feats, cur_a), self.q.q_values(feats, next_a)
        if c.algo == "calql":  # policy-action values may not sink below the data's Monte-Carlo return
            bound = b.mc_returns[None, :, None]
            q_cur, q_next = torch.maximum(q_cur, bound), torch.maximum(q_next, bound)
        rand_logp = rand_a.shape[-1] * math.log(0.5)  # uniform density on [-1, 1]^A
        cat = torch.cat([q_rand - rand_logp, q_cur - cur_logp[None], q_next - next_logp[None]], dim=-1)
        gap = (torch.logsumexp(cat, dim=-1) - q_data).mean(1)  # [C]
        critic_loss = td + c.cql_alpha * gap.sum()
        self._critic_step(critic_loss)
        # actor on detached features; its gradient into the critic is discarded by the next zero_grad
        act, logp = self.actor.sample(feats.detach(), 1)
        q_pi = self.q.q_values(feats.detach(), act).min(0).values[:, 0]
        alpha = self.log_alpha.exp().detach()
        actor_loss = (alpha * logp[:, 0] - q_pi).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        return {"td": td.item(), "cql_gap": gap.mean().item(), "q_data": q_data.mean().item(),
                "actor": actor_loss.item(), "alpha": alpha.item()}

    def _iql(self, b: Batch, text: torch.Tensor, feats: torch.Tensor, q_data: torch.Tensor) -> dict[str, float]:
        c = self.config
        with torch.no_grad():
            target_text = self.target.text_features(b.text_ids, b.embeddings)
            target_q = self.target.q_values(self.target.features(b.pixels, target_text),
                                            b.actions[:, None]).min(0).values[:, 0]
            next_v = self.value(self.q.features(b.next_pixels, text))[:, 0]
            y = b.rewards + c.gamma * (1 - b.dones) * next_v
        v = self.value(feats)[:, 0]
        v_loss = expectile_loss(target_q - v, c.expectile)
        td = F.mse_loss(q_data, y[None].expand_as(q_data), reduction="none").mean(1).sum()
        self._critic_step(td + v_loss)
        return {"td": td.item(), "v_loss": v_loss.item(), "q_data": q_data.mean().item()}

    def _critic_step(self, loss: torch.Tensor) -> None:
        # zeroing first also drops what the previous actor loss left in the critic's grads
        optimizers = [o for o in (self.q_opt, self.embed_opt) if o is not None]
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimizers:
            opt.step()


class Sampler:
    """Random minibatches of transitions as tensors on the critic's device."""

    def __init__(self, data: Transitions, q: QFunction, seed: int) -> None:
        self.data, self.q = data, q
        self.rng = np.random.default_rng(seed)
        self.frames = torch.from_numpy(data.frames).permute(0, 3, 1, 2).contiguous().to(q.device)
        self.actions = q.normalize_actions(data.actions)
        self.embeddings = None if data.embeddings is None else torch.from_numpy(data.embeddings).to(q.device)

    def sample(self, batch_size: int) -> Batch:
        d = self.data
        i = self.rng.integers(0, len(d), size=batch_size)
        t = lambda x: torch.as_tensor(x[i], dtype=torch.float32, device=self.q.device)  # noqa: E731
        scale = 255.0
        return Batch(
            pixels=self.frames[torch.as_tensor(d.obs[i])].float() / scale,
            next_pixels=self.frames[torch.as_tensor(d.next_obs[i])].float() / scale,
            text_ids=[d.instructions[k] for k in d.instruction[i]],
            actions=self.actions[torch.as_tensor(i)], rewards=t(d.rewards), dones=t(d.dones),
            mc_returns=t(d.mc_returns),
            embeddings=None if self.embeddings is None else self.embeddings[torch.as_tensor(d.embedding[i])])


def text_overrides(data: Transitions, language: str) -> dict[str, Any]:
    """QConfig fields for `language` ("tokenizer" or "dataset-embedding"), checked against `data`."""
    if language not in TEXT_ENCODERS:
        raise UnknownPresetError(f"no language encoder {language!r}; use one of {TEXT_ENCODERS}")
    if language == "tokenizer":
        return {}
    if data.embeddings is None:
        raise TrainingDataError("these transitions carry no language_embedding; load them with "
                                "load_transitions(..., language_embedding=True)")
    return {"text_encoder": language, "embedding_dim": int(data.embeddings.shape[1])}


def train_q(data: Transitions, preset: str, config: TrainConfig, *, bounds: ActionBounds | None = None,
            info: dict[str, Any] | None = None, progress: bool = False,
            language: str = "tokenizer") -> tuple[QFunction, list[dict[str, float]]]:
    """Train a Q-function of `preset` on `data`; returns it (eval mode) and the logged metrics."""
    if config.reward not in REWARDS:
        raise UnknownPresetError(f"no reward {config.reward!r}; use one of {REWARDS}")
    text = text_overrides(data, language)
    bad = np.flatnonzero(~np.isfinite(data.actions).all(axis=1))
    if bad.size:
        raise TrainingDataError(f"{bad.size} transitions have NaN or inf actions (first: episode "
                                f"{data.episode[bad[0]]} step {data.step[bad[0]]}); drop or fix those episodes")
    if config.steps < 1 or config.batch_size < 1:
        raise TrainingDataError(f"steps and batch_size must be >= 1; got {config.steps}, {config.batch_size}")
    bounds = bounds or action_bounds(data.actions, config.bounds)
    meta = {"algo": config.algo, "reward": config.reward, "horizon": config.horizon, "gamma": config.gamma,
            "steps": config.steps, **(info or {})}
    q = QFunction.from_preset(preset, bounds, seed=config.seed, info=meta, action_dim=data.actions.shape[1], **text)
    q.to(config.device).train()
    torch.manual_seed(config.seed)
    learner, sampler = Learner(q, config), Sampler(data, q, config.seed)
    history: list[dict[str, float]] = []
    steps = range(config.steps)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc=f"vgps {config.algo}", unit="step")
    before = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        for s in steps:
            metrics = learner.step(sampler.sample(config.batch_size))
            if not all(math.isfinite(v) for v in metrics.values()):
                raise TrainingDataError(f"training diverged at step {s}: {metrics}; lower --lr or check the rewards")
            if s % LOG_EVERY == 0 or s == config.steps - 1:
                history.append({"step": s, **metrics})
                logger.info("step %d %s", s, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    finally:
        torch.set_num_threads(before)
    return q.eval(), history


def train_from_dataset(name: str, data_dir: str | pathlib.Path, out: str | pathlib.Path, *, preset: str = "tiny",
                       config: TrainConfig = TrainConfig(), progress: bool = True,
                       language: str = "tokenizer") -> QFunction:
    """`vla vgps train`: read `name`, train Q with `config`, save it to `out`."""
    from vla.vgps.config import get_preset

    if language not in TEXT_ENCODERS:
        raise UnknownPresetError(f"no language encoder {language!r}; use one of {TEXT_ENCODERS}")
    q_config = get_preset(preset)
    data = load_transitions(name, data_dir, config, image_size=q_config.image_size, camera=q_config.camera,
                            language_embedding=language == "dataset-embedding")
    q, _ = train_q(data, preset, config, info={"datasets": [name], "preset": preset}, progress=progress,
                   language=language)
    q.save_pretrained(out)
    logger.info("saved Q-function to %s", out)
    return q
