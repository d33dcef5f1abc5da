"""Offline-RL transitions from RLDS through the data pipeline: rewards, terminals, Monte-Carlo returns.

Frames come from `vla.data` (standardized episodes, any registry dataset or our own schema).
Rewards follow V-GPS: the last H steps of a trajectory are positive and terminal, all others
negative (`last-h`); `success` does the same only for episodes flagged successful and gives
failed ones no positive reward at all. With `language_embedding=True` the per-step 512-d
`language_embedding` (Bridge: Universal Sentence Encoder) is read too, each distinct vector stored once.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib

import numpy as np

from vla.vgps.config import EMBEDDING_KEY, ActionBounds, NAMED_BOUNDS, TrainConfig
from vla.vgps.errors import TrainingDataError, UnknownPresetError

logger = logging.getLogger(__name__)

DEGENERATE_HALF_RANGE = 1.0  # a dim the data never varies (e.g. scripted rotations): leave its scale as is
MIN_SPAN = 1e-6  # q99 - q01 below this counts as constant


@dataclasses.dataclass(frozen=True)
class Transitions:
    """Every transition of a dataset in memory; images are stored once per frame."""

    frames: np.ndarray  # uint8 [F, S, S, 3], the critic's camera resized
    instructions: tuple[str, ...]  # distinct instructions
    obs: np.ndarray  # int [N] frame of s
    next_obs: np.ndarray  # int [N] frame of s' (s itself on an episode's last step; masked by done)
    instruction: np.ndarray  # int [N] index into `instructions`
    actions: np.ndarray  # float32 [N, A] in the robot's units
    rewards: np.ndarray  # float32 [N]
    dones: np.ndarray  # float32 [N], 1 where the episode terminates (no bootstrap)
    mc_returns: np.ndarray  # float32 [N], discounted return to the episode's end
    episode: np.ndarray  # int [N] episode index
    step: np.ndarray  # int [N] step within its episode
    successes: tuple[bool | None, ...]  # per episode
    embeddings: np.ndarray | None = None  # float32 [E, D] distinct language_embedding vectors (if read)
    embedding: np.ndarray | None = None  # int [N] index into `embeddings`

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def subset(self, episodes: np.ndarray) -> "Transitions":
        """The transitions of the given episode indices (frames shared)."""
        keep = np.isin(self.episode, episodes)
        return dataclasses.replace(
            self, obs=self.obs[keep], next_obs=self.next_obs[keep], instruction=self.instruction[keep],
            actions=self.actions[keep], rewards=self.rewards[keep], dones=self.dones[keep],
            mc_returns=self.mc_returns[keep], episode=self.episode[keep], step=self.step[keep],
            embedding=None if self.embedding is None else self.embedding[keep])

    def embeddings_at(self, rows: np.ndarray | slice) -> np.ndarray | None:
        """The language_embedding [n, D] of the given transitions (None if not read)."""
        return None if self.embeddings is None else self.embeddings[self.embedding[rows]]


def episode_rewards(length: int, success: bool | None, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(rewards, dones) of one episode under `config.reward`."""
    rewards = np.full(length, config.negative_reward, np.float32)
    dones = np.zeros(length, np.float32)
    dones[-1] = 1.0  # the data ends here: nothing to bootstrap from, in either scheme
    positive = config.reward == "last-h" or success is True
    if positive:
        tail = slice(max(0, length - config.horizon), length)
        rewards[tail], dones[tail] = config.positive_reward, 1.0
    return rewards, dones


def mc_returns(rewards: np.ndarray, dones: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted return G_t = r_t + gamma * (1 - done_t) * G_{t+1}, backwards over one episode."""
    out, g = np.zeros_like(rewards), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * (1.0 - dones[t]) * g
        out[t] = g
    return out


def episode_success(source, split: str = "train") -> dict[str, bool | None]:
    """Episode id (as `iter_episodes` names it) -> success flag from episode_metadata (None: unknown)."""
    import tensorflow_datasets as tfds

    ds = source.builder.as_dataset(split=split, shuffle_files=False, decoders={"steps": tfds.decode.SkipDecoding()})
    out: dict[str, bool | None] = {}
    for i, raw in enumerate(tfds.as_numpy(ds.map(lambda x: x.get("episode_metadata", {})))):
        if source.standardized and "episode_id" in raw:
            ident = str(int(raw["episode_id"]))
        else:
            path = raw.get("file_path", b"")
            ident = (path.decode() if isinstance(path, bytes) else str(path)) or str(raw.get("episode_id", i))
        known = bool(raw.get("success_known", "success" in raw))
        out[ident] = bool(raw["success"]) if known and "success" in raw else None
    return out


def action_bounds(actions: np.ndarray, name: str) -> ActionBounds:
    """The critic's bounds: a named set, or `data` = q01/q99 per dim (constant dims get a unit half-range)."""
    if name != "data":
        if name not in NAMED_BOUNDS:
            raise UnknownPresetError(f"no action bounds {name!r}; use 'data' or one of {sorted(NAMED_BOUNDS)}")
        bounds = NAMED_BOUNDS[name]
        if len(bounds.low) != actions.shape[1]:
            raise TrainingDataError(f"bounds {name!r} have {len(bounds.low)} dims but the actions have "
                                    f"{actions.shape[1]}; use --bounds data")
        return bounds
    lo, hi = np.quantile(actions, [0.01, 0.99], axis=0)
    flat = (hi - lo) < MIN_SPAN
    if flat.any():
        logger.warning("action dims %s never vary in the data; the critic keeps them unscaled around %s",
                       np.flatnonzero(flat).tolist(), lo[flat].tolist())
    lo = np.where(flat, lo - DEGENERATE_HALF_RANGE, lo)
    hi = np.where(flat, hi + DEGENERATE_HALF_RANGE, hi)
    return ActionBounds(tuple(float(x) for x in lo), tuple(float(x) for x in hi))


def episode_embeddings(source, split: str = "train") -> list[np.ndarray]:
    """Per episode, in file order, the float32 [T, D] `language_embedding` of its steps."""
    import tensorflow_datasets as tfds

    from vla.data.rlds import step_features

    features = step_features(source.builder)
    if EMBEDDING_KEY not in features:
        raise TrainingDataError(
            f"dataset {source.name!r} has no per-step {EMBEDDING_KEY!r} (its step keys: {sorted(features)}); "
            "--language dataset-embedding needs the sentence embedding Bridge-style shards carry; use "
            "--language tokenizer (the default) for this dataset")
    dtype, shape = features[EMBEDDING_KEY]
    if len(shape) != 1 or not dtype.startswith("float"):
        raise TrainingDataError(f"dataset {source.name!r} has {EMBEDDING_KEY!r} as {dtype}{list(shape)}, not a "
                                "float vector per step; use --language tokenizer")
    ds = source.builder.as_dataset(split=split, shuffle_files=False, decoders={"steps": tfds.decode.SkipDecoding()})
    return [np.asarray(v, np.float32) for v in tfds.as_numpy(ds.map(lambda x: x["steps"][EMBEDDING_KEY]))]


def _check_text(name: str, ep, texts: list[str], vectors: np.ndarray | None) -> None:
    """Every step needs language: an instruction, or (embedding mode) a finite non-zero embedding."""
    if vectors is None:
        if not all(texts):
            raise TrainingDataError(f"dataset {name!r} episode {ep.episode_id} has steps without a language "
                                    "instruction; V-GPS needs one per step (fill language_instruction)")
        return
    if len(vectors) != len(ep):
        raise TrainingDataError(f"dataset {name!r} episode {ep.episode_id} has {len(vectors)} {EMBEDDING_KEY} rows "
                                f"for {len(ep)} steps; re-write the dataset")
    if not np.isfinite(vectors).all() or not np.abs(vectors).sum(axis=1).all():
        raise TrainingDataError(f"dataset {name!r} episode {ep.episode_id} has NaN, inf or all-zero "
                                f"{EMBEDDING_KEY} vectors (steps without language); drop those episodes or use "
                                "--language tokenizer")


def load_transitions(name: str, data_dir: str | pathlib.Path, config: TrainConfig, *, image_size: int,
                     camera: str = "primary", split: str = "train", language_embedding: bool = False) -> Transitions:
    """Read dataset `name` through `vla.data`, resize the `camera` frames, and label rewards and returns."""
    import cv2

    from vla.data.rlds import decode_image, iter_episodes, open_dataset

    source = open_dataset(name, data_dir)
    flags = episode_success(source, split) if config.reward == "success" else {}
    vectors = episode_embeddings(source, split) if language_embedding else None
    frames: list[np.ndarray] = []
    instr_index: dict[str, int] = {}
    vector_index: dict[bytes, int] = {}
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "next", "instr", "act", "rew", "done", "mc", "ep", "t",
                                                         "emb")}
    successes: list[bool | None] = []
    for e, ep in enumerate(iter_episodes(source, split)):
        if camera not in ep.images:
            raise TrainingDataError(f"dataset {name!r} episode {ep.episode_id} has cameras {sorted(ep.images)}, "
                                    f"not {camera!r}; pick another --camera")
        texts = [str(s).strip() for s in ep.instructions]
        episode_vectors = None if vectors is None else vectors[e]
        _check_text(name, ep, texts, episode_vectors)
        success = flags.get(ep.episode_id) if flags else None
        if config.reward == "success" and success is None:
            raise TrainingDataError(f"dataset {name!r} episode {ep.episode_id} has no success flag; --reward success "
                                    "needs data recorded with success (e.g. `vla sim collect`), else use --reward last-h")
        n, base = len(ep), len(frames)
        for t in range(n):
            img = decode_image(ep.images[camera][t])
            frames.append(img if img.shape[:2] == (image_size, image_size)
                          else cv2.resize(img, (image_size, image_size), interpolation=cv2.INTER_AREA))
        rewards, dones = episode_rewards(n, success, config)
        steps = np.arange(n)
        cols["obs"].append(base + steps)
        cols["next"].append(base + np.minimum(steps + 1, n - 1))
        cols["instr"].append(np.array([instr_index.setdefault(s, len(instr_index)) for s in texts]))
        cols["act"].append(np.asarray(ep.action, np.float32))
        cols["rew"].append(rewards)
        cols["done"].append(dones)
        cols["mc"].append(mc_returns(rewards, dones, config.gamma))
        cols["ep"].append(np.full(n, e))
        cols["t"].append(steps)
        if episode_vectors is not None:
            cols["emb"].append(np.array([vector_index.setdefault(v.tobytes(), len(vector_index))
                                         for v in episode_vectors]))
        successes.append(success)
    if not successes:
        raise TrainingDataError(f"dataset {name!r} split {split!r} has no episodes")
    if config.reward == "success" and not any(successes):
        raise TrainingDataError(f"dataset {name!r} has no successful episode, so --reward success gives no positive "
                                "reward anywhere; collect some successes or use --reward last-h")
    cat = {k: np.concatenate(v) for k, v in cols.items() if v}
    logger.info("%s: %d episodes, %d transitions, %d instructions", name, len(successes), len(cat["act"]),
                len(instr_index))
    return Transitions(
        frames=np.stack(frames), instructions=tuple(instr_index), obs=cat["obs"], next_obs=cat["next"],
        instruction=cat["instr"], actions=cat["act"], rewards=cat["rew"].astype(np.float32),
        dones=cat["done"].astype(np.float32), mc_returns=cat["mc"].astype(np.float32), episode=cat["ep"],
        step=cat["t"], successes=tuple(successes),
        embeddings=np.stack([np.frombuffer(b, np.float32) for b in vector_index]) if vectors is not None else None,
        embedding=cat.get("emb"))
