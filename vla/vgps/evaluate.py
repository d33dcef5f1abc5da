"""How good is a trained critic on a dataset: does it rank data actions above perturbed ones, and
how do its values compare with the Monte-Carlo returns (Cal-QL's calibration)?"""
from __future__ import annotations

import dataclasses
import logging
import pathlib

import numpy as np

from vla.vgps.config import TrainConfig
from vla.vgps.data import Transitions, load_transitions
from vla.vgps.qfunction import QFunction

logger = logging.getLogger(__name__)

PERTURB_STD = 0.5  # Gaussian noise on the data action, in the critic's normalized units (1 = half its range)
SCORE_BATCH = 256


@dataclasses.dataclass(frozen=True)
class ScoreReport:
    """Ranking accuracy and calibration of a Q-function on one dataset."""

    transitions: int
    ranking_accuracy: float  # share of states where Q(data action) > Q(perturbed data action)
    perturb_std: float
    mean_q: float  # mean Q of the data actions
    mean_mc_return: float
    q_mc_correlation: float  # Pearson correlation of Q(s, a_data) and the MC return


def q_on(q: QFunction, data: Transitions, actions: np.ndarray) -> np.ndarray:
    """Q [N] of `actions` [N, A] at every state of `data`, in batches."""
    out = []
    for start in range(0, len(data), SCORE_BATCH):
        sl = slice(start, start + SCORE_BATCH)
        images = list(data.frames[data.obs[sl]])
        texts = [data.instructions[i] for i in data.instruction[sl]]
        out.append(q.score_batch(images, texts, actions[sl], language_embeddings=data.embeddings_at(sl)))
    return np.concatenate(out)


def perturb(q: QFunction, actions: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Actions plus Gaussian noise of `std` in the critic's normalized units, back in robot units."""
    half = (np.asarray(q.bounds.high) - np.asarray(q.bounds.low)) / 2
    return (actions + rng.normal(0.0, std, actions.shape) * half).astype(np.float32)


def score_transitions(q: QFunction, data: Transitions, *, perturb_std: float = PERTURB_STD,
                      seed: int = 0) -> ScoreReport:
    """Ranking accuracy and calibration of `q` on `data`."""
    rng = np.random.default_rng(seed)
    q_data = q_on(q, data, data.actions)
    q_noisy = q_on(q, data, perturb(q, data.actions, perturb_std, rng))
    corr = float(np.corrcoef(q_data, data.mc_returns)[0, 1]) if np.std(q_data) > 0 and np.std(data.mc_returns) > 0 \
        else float("nan")
    return ScoreReport(transitions=len(data), ranking_accuracy=float(np.mean(q_data > q_noisy)),
                       perturb_std=perturb_std, mean_q=float(q_data.mean()),
                       mean_mc_return=float(data.mc_returns.mean()), q_mc_correlation=corr)


def score_dataset(q: QFunction, name: str, data_dir: str | pathlib.Path, *, reward: str | None = None,
                  perturb_std: float = PERTURB_STD, seed: int = 0) -> ScoreReport:
    """`vla vgps score`: read `name` with the rewards Q was trained with (or `reward`) and score it."""
    info = q.info
    config = TrainConfig(reward=reward or info.get("reward", "last-h"), horizon=info.get("horizon", 3),
                         gamma=info.get("gamma", 0.98))
    data = load_transitions(name, data_dir, config, image_size=q.config.image_size, camera=q.config.camera,
                            language_embedding=q.uses_embedding)
    report = score_transitions(q, data, perturb_std=perturb_std, seed=seed)
    logger.info("%s: %s", name, report)
    return report
