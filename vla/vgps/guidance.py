"""Value-guided policy steering: sample K actions from a frozen policy, let Q pick one.

beta = 0 takes the argmax of Q; beta > 0 samples from softmax(Q / beta), as V-GPS does. The
policy can be anything that samples: a model with `predict_actions(..., n_samples=K)` or a
`serving.client.PolicyClient` (asked with `options={"n_samples": K}`, reading `.candidates`).
A Q-function trained on the dataset's `language_embedding` needs that vector: give it once
(`language_embedding=`) or per observation in `obs.info["language_embedding"]`.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from vla.vgps.config import EMBEDDING_KEY
from vla.vgps.errors import GuidanceError, MismatchError, SamplingError
from vla.vgps.qfunction import QFunction

logger = logging.getLogger(__name__)

PRIMARY = "primary"  # the camera role a single-image policy is given
DEFAULT_TEMPERATURE = 1.0
SAMPLING_PATIENCE = 20  # steps of identical candidates before a policy that is not the local OpenVLA counts as not sampling


class SamplingModel(Protocol):
    """A policy that returns K sampled actions [K, A] for one observation."""

    def predict_actions(self, images: Any, instructions: Any, unnorm_key: str | None = None, *,
                        n_samples: int = 1, temperature: float = 1.0) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class GuidedAction:
    """The chosen action and what it was chosen from (a `robot.Policy` output: it has `.action`)."""

    action: np.ndarray  # [A]
    candidates: np.ndarray  # [K, A]
    values: np.ndarray  # [K] Q of each candidate
    index: int  # which candidate was taken


def is_openvla(policy: Any) -> bool:
    """Whether `policy` is a vla.OpenVLA (sampled here off one prefill: `vla.vgps.sampling`)."""
    return hasattr(policy, "language_model") and hasattr(policy, "action_tokenizer")


def check_guidance(k: int, beta: float) -> None:
    """Raise GuidanceError for K < 1 or beta < 0 (or non-finite)."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise GuidanceError(f"K (number of sampled actions) must be an integer >= 1, got {k!r}")
    if not np.isfinite(beta) or beta < 0:
        raise GuidanceError(f"beta must be >= 0 (0 = argmax of Q, > 0 = softmax(Q/beta) sampling), got {beta!r}")


def check_candidates(candidates: Any, k: int, action_dim: int) -> np.ndarray:
    """Candidates as float [K, A], checked for shape, finiteness and actual sampling."""
    c = np.asarray(candidates, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != k:
        raise GuidanceError(f"the policy returned candidates of shape {c.shape}, expected [{k}, {action_dim}]")
    if c.shape[1] != action_dim:
        raise MismatchError(f"the policy's actions have {c.shape[1]} dims but the Q-function scores {action_dim}; "
                            "use a Q-function trained on this policy's action space")
    if not np.isfinite(c).all():
        raise GuidanceError("the policy returned NaN or inf candidate actions")
    return c


class SamplingWatch:
    """Raise once a policy's K candidates were identical on each of its first `patience` steps.

    One step of identical candidates is no fault: a trained policy is often that confident (a tiny
    WidowX policy at temperature 1 was, on ~1 step in 10). A policy that never returns two different
    candidates in `patience` steps is not sampling (greedy decoding, temperature 0, a fixed policy).
    """

    def __init__(self, k: int, patience: int = SAMPLING_PATIENCE) -> None:
        self.k, self.patience = k, patience
        self.identical, self.sampled = 0, False

    def observe(self, candidates: np.ndarray) -> None:
        """Record one step's candidates [K, A]; raise SamplingError on the `patience`-th identical step."""
        if self.sampled or self.k == 1:
            return
        if not np.all(candidates == candidates[0]):
            self.sampled = True
            return
        self.identical += 1
        if self.identical >= self.patience:
            raise SamplingError(f"all {self.k} candidates were identical on each of the first {self.patience} "
                                "steps: the policy is not sampling; set temperature > 0 (greedy decoding returns "
                                "one action K times)")


def check_policy_action_dim(model: Any, q: QFunction, unnorm_key: str | None) -> None:
    """Raise MismatchError when a vla.OpenVLA predicts actions of another dim than `q` scores."""
    from vla.model.normalization import select_stats

    key, stats = select_stats(model.norm_stats, unnorm_key)
    if stats.dim != q.config.action_dim:
        raise MismatchError(f"the policy predicts {stats.dim}-dim actions ({key!r}) but the Q-function scores "
                            f"{q.config.action_dim}-dim ones; use a Q-function trained on this policy's action space")


def choose(values: np.ndarray, beta: float, rng: np.random.Generator) -> int:
    """Index of the candidate to execute: argmax (beta 0) or a softmax(Q / beta) draw."""
    if beta == 0:
        return int(np.argmax(values))
    logits = (values - values.max()) / beta
    p = np.exp(logits)
    return int(rng.choice(len(values), p=p / p.sum()))


def rerank(q: QFunction, images: Any, instruction: str, candidates: Any, beta: float,
           rng: np.random.Generator, language_embedding: Any = None) -> GuidedAction:
    """Score candidates [K, A] with Q and pick one; the step the server and the in-process policy share."""
    c = check_candidates(candidates, len(candidates), q.config.action_dim)
    values = q.score(images, instruction, c, language_embedding=language_embedding)
    index = choose(values, beta, rng)
    return GuidedAction(action=c[index].copy(), candidates=c, values=values, index=index)


class ValueGuidedPolicy:
    """`robot.Policy` that re-ranks K samples of `policy` with `q` (V-GPS)."""

    def __init__(self, policy: Any, q: QFunction, k: int = 10, beta: float = 0.0, *,
                 temperature: float = DEFAULT_TEMPERATURE,
                 unnorm_key: str | None = None, seed: int = 0, language_embedding: Any = None) -> None:
        check_guidance(k, beta)
        if temperature <= 0:
            raise SamplingError(f"temperature must be > 0 to sample K different actions, got {temperature}")
        if not (hasattr(policy, "predict_actions") or hasattr(policy, "act")):
            raise GuidanceError(f"{type(policy).__name__} can neither predict_actions(..., n_samples=K) nor "
                                "act(..., options={'n_samples': K}); give a vla.OpenVLA or a PolicyClient")
        self.policy, self.q, self.k, self.beta = policy, q, int(k), float(beta)
        self.temperature, self.unnorm_key = temperature, unnorm_key
        if language_embedding is not None:  # checked now, not at the first step of an episode
            q.embedding_tensor(language_embedding, 1)
        self.language_embedding = language_embedding
        self.rng = np.random.default_rng(seed)
        self.generator = None
        # an OpenVLA is sampled here at temperature > 0: identical candidates are its confidence, never a fault
        self.watch = None if is_openvla(policy) else SamplingWatch(self.k)
        if is_openvla(policy):
            import torch

            check_policy_action_dim(policy, q, unnorm_key)
            self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def embedding_for(self, obs: Any, instruction: str) -> Any:
        """The language_embedding to score with: the observation's, else the one given at construction."""
        info = getattr(obs, "info", None)
        vector = info.get(EMBEDDING_KEY) if isinstance(info, Mapping) else None
        vector = self.language_embedding if vector is None else vector
        if self.q.uses_embedding and vector is None:
            raise GuidanceError(
                f"this Q-function FiLMs on the dataset's {EMBEDDING_KEY}, which no encoder here can compute for "
                f"{instruction!r}; pass ValueGuidedPolicy(..., {EMBEDDING_KEY}=<the instruction's vector>) or put "
                f"it in obs.info[{EMBEDDING_KEY!r}] (for `vla sim eval`/`vla serve`, train Q with --language "
                "tokenizer)")
        return vector if self.q.uses_embedding else None

    def candidates(self, images: Mapping[str, np.ndarray], instruction: str) -> np.ndarray:
        """K sampled actions [K, A] from the wrapped policy."""
        predict = getattr(self.policy, "predict_actions", None)
        if predict is not None or is_openvla(self.policy):
            if PRIMARY not in images:
                raise MismatchError(f"the policy needs a {PRIMARY!r} image; the observation has {sorted(images)}")
            if is_openvla(self.policy):  # with this policy's own seeded generator: reproducible episodes
                from vla.vgps.sampling import sample_actions

                return sample_actions(self.policy, images[PRIMARY], instruction, self.k, self.temperature,
                                      self.unnorm_key, self.generator)
            if "n_samples" not in inspect.signature(predict).parameters:
                raise GuidanceError(f"{type(self.policy).__name__}.predict_actions takes no n_samples: it cannot "
                                    "sample K candidates")
            return predict([images[PRIMARY]], [instruction], self.unnorm_key, n_samples=self.k,
                           temperature=self.temperature)
        options: dict[str, Any] = {"n_samples": self.k}
        if self.temperature != DEFAULT_TEMPERATURE:  # servers that sample at their default may not take the option
            options["temperature"] = self.temperature
        reply = self.policy.act(_Obs(dict(images), None), instruction, unnorm_key=self.unnorm_key, options=options)
        if getattr(reply, "candidates", None) is None:
            raise GuidanceError("the policy server returned no .candidates for n_samples; serve a model that samples "
                                "(a `vla serve` checkpoint), not a fixed policy")
        return reply.candidates

    def act(self, obs: Any, instruction: str) -> GuidedAction:
        """Sample K actions for `obs` (images by role), score them with Q, return the chosen one."""
        images = obs.images if hasattr(obs, "images") else obs
        if not isinstance(images, Mapping):
            raise GuidanceError(f"expected an observation with .images by role, got {type(obs).__name__}")
        embedding = self.embedding_for(obs, instruction)
        self.q.pick_image(images)  # a camera the critic lacks fails before K samples are drawn
        raw = self.candidates(images, instruction)
        c = check_candidates(raw, self.k, self.q.config.action_dim)
        if self.watch is not None:
            self.watch.observe(c)
        return rerank(self.q, images, instruction, c, self.beta, self.rng, embedding)


@dataclasses.dataclass(frozen=True)
class _Obs:
    """The duck-typed observation a PolicyClient accepts (images by role, proprio)."""

    images: dict[str, np.ndarray]
    proprio: np.ndarray | None
