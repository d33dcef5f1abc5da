"""Helpers shared by the sim perturbation tests."""
from __future__ import annotations

import numpy as np


def mean_pixel_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 frames, in grey levels (0: identical)."""
    return float(np.abs(a.astype(int) - b.astype(int)).mean())
