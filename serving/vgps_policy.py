"""V-GPS on the server: a model policy whose every action is re-ranked by a Q-function.

Each request draws K candidates from the model (one prefill, K decodes) and `vla.vgps` picks one:
argmax of Q at beta 0, a softmax(Q / beta) draw otherwise. The reply carries the chosen
`action` plus `candidates` [K, A] and their `values` [K], so a client can see why.
"""
from __future__ import annotations

import logging
import math
import pathlib
from typing import Any, Sequence

import numpy as np

from serving.errors import InvalidRequestError, ServerConfigError
from serving.policies import MAX_SAMPLES, ModelPolicy
from serving.protocol import ActRequest

log = logging.getLogger(__name__)


class ValueGuidedModelPolicy:
    """A `ServedPolicy`: `ModelPolicy` sampling plus Q re-ranking (the server decides K and beta)."""

    def __init__(self, inner: ModelPolicy, q: Any, k: int = 10, beta: float = 0.0, temperature: float = 1.0,
                 seed: int = 0) -> None:
        import torch

        if type(k) is not int or not 1 <= k <= MAX_SAMPLES:
            raise ServerConfigError(f"--vgps-k {k!r} must be an int in 1..{MAX_SAMPLES} (the server's sample limit)")
        if not (math.isfinite(beta) and beta >= 0):
            raise ServerConfigError(f"--vgps-beta {beta!r} must be >= 0 (0 = argmax of Q)")
        if not temperature > 0:
            raise ServerConfigError(f"--vgps-temperature {temperature!r} must be > 0 to sample K different actions")
        if getattr(q, "uses_embedding", False):
            raise ServerConfigError("the Q-function FiLMs on the dataset's language_embedding vector, which requests "
                                    "cannot carry and no encoder here can compute from the instruction; serve a Q "
                                    "trained with `vla vgps train --language tokenizer`, or re-rank in-process with "
                                    "ValueGuidedPolicy(..., language_embedding=)")
        dims = set(inner.metadata()["action_dims"].values())
        if dims != {q.config.action_dim}:
            raise ServerConfigError(f"the Q-function scores {q.config.action_dim}-dim actions but the checkpoint "
                                    f"predicts {sorted(dims)}; train Q on this policy's action space")
        if q.config.camera != inner.camera:
            raise ServerConfigError(f"the Q-function looks at camera role {q.config.camera!r} but the model is served "
                                    f"{inner.camera!r} images; train Q on that camera")
        self.inner, self.q, self.k, self.beta, self.temperature = inner, q, k, float(beta), float(temperature)
        self.generator = torch.Generator().manual_seed(seed)  # same seed, same candidates and choices
        self.rng = np.random.default_rng(seed)

    def metadata(self) -> dict[str, Any]:
        """The model's metadata plus the re-ranking settings; no per-request options."""
        return {**self.inner.metadata(), "options": {},
                "vgps": {"k": self.k, "beta": self.beta, "temperature": self.temperature, "q": self.q.info}}

    def check(self, request: ActRequest) -> None:
        """The model's checks; options are refused since K and beta are the server's."""
        if request.options:
            raise InvalidRequestError(f"this server re-ranks K={self.k} samples with V-GPS itself; send no options "
                                      f"(got {sorted(request.options)})")
        self.inner.check(request)

    def act_batch(self, requests: Sequence[ActRequest]) -> list[dict[str, Any]]:
        """Per request: K samples, Q scores, one choice; replies add `candidates` and `values`."""
        from vla.vgps.guidance import rerank
        from vla.vgps.sampling import sample_actions

        out = []
        for r in requests:
            image = r.images[self.inner.camera]
            key = r.unnorm_key or self.inner.default_unnorm_key
            candidates = sample_actions(self.inner.model, image, r.instruction, self.k, self.temperature, key,
                                        self.generator)
            chosen = rerank(self.q, {self.inner.camera: image}, r.instruction, candidates, self.beta, self.rng)
            out.append({"action": chosen.action.astype(np.float32), "candidates": chosen.candidates.astype(np.float32),
                        "values": chosen.values.astype(np.float32)})
        return out

    def reset(self) -> None:
        """The model is memoryless; nothing to forget."""
        self.inner.reset()


def load_vgps_policy(inner: ModelPolicy, q_dir: str | pathlib.Path, k: int, beta: float,
                     temperature: float = 1.0, seed: int = 0) -> ValueGuidedModelPolicy:
    """Wrap `inner` with the Q-function saved in `q_dir`."""
    from vla.vgps.errors import VGPSError
    from vla.vgps.qfunction import QFunction

    try:
        q = QFunction.from_pretrained(q_dir, device=inner.model.device)
    except VGPSError as e:
        raise ServerConfigError(f"--vgps {q_dir}: {e}") from e
    return ValueGuidedModelPolicy(inner, q, k=k, beta=beta, temperature=temperature, seed=seed)
