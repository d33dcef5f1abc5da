"""Action bins and (un)normalization."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla.errors import ActionTokenError, StatisticsError
from vla.model.action_tokenizer import ActionTokenizer
from vla.model.normalization import (ActionStats, normalize_actions, statistics_from_arrays, symmetric_bounds,
                                     unnormalize_actions)


def test_token_range_and_known_values():
    tok = ActionTokenizer()
    ids = tok.encode(np.array([-1.0, 0.0, 1.0]))
    assert ids.tolist() == [31999, 31872, 31744]
    assert tok.decode(np.array([31999]))[0] == pytest.approx(-1 + 1 / 255)
    assert tok.decode(np.array([31744, 31745])).tolist() == [tok.bin_centers[-1]] * 2


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1, 1), min_size=1, max_size=7))
def test_round_trip_within_half_bin(values):
    tok = ActionTokenizer()
    a = np.array(values)
    assert np.abs(tok.decode(tok.encode(a)) - a).max() <= 1 / 255 + 1e-12


def test_out_of_range_is_an_error():
    tok = ActionTokenizer()
    with pytest.raises(ActionTokenError, match="normalize_actions"):
        tok.encode(np.array([1.5]))
    with pytest.raises(ActionTokenError, match="not action tokens"):
        tok.decode(np.array([29871]))
    with pytest.raises(ActionTokenError, match="NaN"):
        tok.encode(np.array([np.nan]))


def test_normalization_matches_openvla_formula():
    actions = np.random.default_rng(1).normal(size=(500, 7))
    stats = statistics_from_arrays(actions, mask=[True] * 6 + [False])
    a = ActionStats.from_dict(stats["action"])
    np.testing.assert_allclose(a.q01, np.quantile(actions, 0.01, axis=0))
    n = normalize_actions(actions, stats["action"])
    assert n[:, :6].min() == -1 and n[:, :6].max() == 1  # tails saturate, as OpenVLA trains
    np.testing.assert_array_equal(n[:, 6], actions[:, 6])
    inside = np.all((actions >= a.q01) & (actions <= a.q99), axis=1)
    np.testing.assert_allclose(unnormalize_actions(n, a)[inside], actions[inside], atol=1e-6)
    with pytest.raises(StatisticsError, match="7"):
        normalize_actions(np.zeros((2, 6)), a)


def test_symmetric_bounds_let_a_direction_the_demos_never_took_round_trip():
    rng = np.random.default_rng(0)
    forward_only = np.stack([rng.uniform(0, 0.02, 500), rng.uniform(-0.01, 0.02, 500), rng.integers(0, 2, 500)], 1)
    stats = statistics_from_arrays(forward_only, mask=[True, True, False])
    backward = np.array([[-0.015, -0.005, 1.0]])
    plain = ActionStats.from_dict(stats["action"])
    assert unnormalize_actions(normalize_actions(backward, plain), plain)[0, 0] == pytest.approx(
        stats["action"]["q01"][0], abs=1e-6)  # q01..q99 bins clip the step back to ~0
    wide = ActionStats.from_dict(symmetric_bounds(stats)["action"])
    np.testing.assert_allclose(unnormalize_actions(normalize_actions(backward, wide), wide), backward, atol=1e-6)
    assert symmetric_bounds(stats)["action"]["q01"][2] == stats["action"]["q01"][2]  # unmasked dims untouched
