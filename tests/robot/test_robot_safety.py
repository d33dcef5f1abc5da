"""The safety filter: every clamp reported, malformed actions rejected."""
from __future__ import annotations

import numpy as np
import pytest

from robot import SafetyFilter, SafetyLimits, SpecError, UnsafeActionError

LIMITS = SafetyLimits(
    workspace_low=(0.1, -0.2, 0.0), workspace_high=(0.4, 0.2, 0.3), max_translation=0.02, max_rotation=0.1
)
INSIDE = np.array([0.25, 0.0, 0.15, 0.0, 0.0, 0.0, 1.0])


def test_inside_action_passes_unchanged():
    f = SafetyFilter(LIMITS)
    action = np.array([0.01, -0.01, 0.005, 0.05, 0.0, -0.05, 0.5])
    out, report = f(action, INSIDE)
    np.testing.assert_array_equal(out, action)
    assert not report.clamped and str(report) == "no clamps"
    assert sum(f.counts.values()) == 0


def test_every_clamp_is_reported_and_counted():
    f = SafetyFilter(LIMITS)
    out, report = f(np.array([0.5, 0.0, -0.03, 0.0, 0.3, 0.0, 1.5]), INSIDE)
    limits = [(c.limit, c.index) for c in report.clamps]
    assert limits == [("translation", 0), ("translation", 2), ("rotation", 4), ("gripper", 6)]
    np.testing.assert_allclose(out, [0.02, 0.0, -0.02, 0.0, 0.1, 0.0, 1.0])
    assert report.clamps[0].requested == 0.5 and report.clamps[0].applied == 0.02
    assert f.counts == {"translation": 2, "rotation": 1, "gripper": 1}


def test_workspace_shortens_the_step_at_the_box_edge():
    f = SafetyFilter(LIMITS)
    state = np.array([0.395, 0.0, 0.001])
    out, report = f(np.array([0.02, 0.0, -0.02, 0, 0, 0, 0]), state)
    np.testing.assert_allclose(out[:3], [0.005, 0.0, -0.001], atol=1e-12)
    assert [(c.limit, c.index) for c in report.clamps] == [("workspace", 0), ("workspace", 2)]


@pytest.mark.parametrize(
    "bad",
    [np.zeros(6), np.zeros((1, 7)), np.array([np.nan] + [0.0] * 6), np.array([0.0] * 6 + [np.inf]), ["a"] * 7],
)
def test_malformed_actions_raise(bad):
    with pytest.raises(UnsafeActionError, match="not moved"):
        SafetyFilter(LIMITS)(bad, INSIDE)


def test_bad_state_raises():
    with pytest.raises(UnsafeActionError, match="end-effector xyz"):
        SafetyFilter(LIMITS)(np.zeros(7), np.array([np.nan, 0, 0]))


def test_contradictory_limits_raise():
    with pytest.raises(SpecError, match="below"):
        SafetyLimits((0.5, 0, 0), (0.4, 1, 1), 0.01, 0.1)
    with pytest.raises(SpecError, match="> 0"):
        SafetyLimits((0, 0, 0), (1, 1, 1), 0.0, 0.1)
