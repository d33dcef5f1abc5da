"""Action tokenizer: 256 uniform bins on [-1, 1], carried by the last 256 ids of the tokenizer vocab.

Token = vocab_size - digitize(a, bins), as OpenVLA trains; decoding maps a token to its bin centre.
"""
from __future__ import annotations

import numpy as np

from vla.errors import ActionTokenError

ACTION_RANGE = (-1.0, 1.0)


class ActionTokenizer:
    """Encode normalized actions to token ids and decode token ids to bin centres."""

    def __init__(self, vocab_size: int = 32000, n_bins: int = 256,
                 low: float = ACTION_RANGE[0], high: float = ACTION_RANGE[1]) -> None:
        self.vocab_size, self.n_bins, self.low, self.high = vocab_size, n_bins, low, high
        self.bins = np.linspace(low, high, n_bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0  # n_bins - 1 centres
        # ids vocab_size - n_bins .. vocab_size - 1 are actions; the lowest id is digitize == n_bins,
        # reached only by exactly `high`, and decodes to the top centre as in the original
        self.first_id = vocab_size - n_bins
        self.last_id = vocab_size - 1

    def encode(self, normalized: np.ndarray) -> np.ndarray:
        """Normalized actions in [-1, 1] (any shape) -> int64 token ids of the same shape."""
        a = np.asarray(normalized, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            raise ActionTokenError("actions contain NaN or inf; check the data and its statistics")
        if a.size and (a.min() < self.low or a.max() > self.high):
            raise ActionTokenError(
                f"normalized actions span [{a.min():.4f}, {a.max():.4f}], outside [{self.low}, {self.high}]; "
                "normalize them with vla.model.normalization.normalize_actions (which saturates at q01/q99)")
        return (self.vocab_size - np.digitize(a, self.bins)).astype(np.int64)

    def is_action_token(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask of which ids are action tokens."""
        ids = np.asarray(ids)
        return (ids >= self.first_id) & (ids <= self.last_id)

    def decode(self, ids: np.ndarray) -> np.ndarray:
        """Action token ids -> normalized actions (bin centres), float64, same shape."""
        ids = np.asarray(ids, dtype=np.int64)
        if not np.all(self.is_action_token(ids)):
            bad = ids[~self.is_action_token(ids)]
            raise ActionTokenError(
                f"token ids {bad[:5].tolist()} are not action tokens (valid: {self.first_id}..{self.last_id}); "
                "the model emitted text, not an action")
        index = np.minimum(self.vocab_size - ids - 1, len(self.bin_centers) - 1)
        return self.bin_centers[index]
