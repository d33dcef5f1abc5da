"""K sampled actions from a tiny OpenVLA: one prefill, K decodes; temperature -> 0 is greedy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import vla
from vla.model.normalization import statistics_from_arrays
from vla.vgps.errors import GuidanceError, SamplingError
from vla.vgps.sampling import sample_actions

INSTRUCTION = "pick up the red block"


@pytest.fixture(scope="module")
def model():
    a = np.random.default_rng(0).uniform(-0.5, 0.5, size=(200, 7))
    a[:, 6] = a[:, 6] > 0
    stats = {"toy": statistics_from_arrays(a, mask=[True] * 6 + [False], num_trajectories=4)}
    return vla.OpenVLA.from_preset("tiny", norm_stats=stats, seed=0)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def test_k_distinct_samples_from_one_prefill(model, image):
    calls = []  # (batch rows, whether the call carried the image) per decoder pass
    hook = model.language_model.model.register_forward_hook(
        lambda mod, args, kwargs, out: calls.append(
            (out.last_hidden_state.shape[0], kwargs.get("inputs_embeds") is not None)), with_kwargs=True)
    try:
        out = sample_actions(model, image, INSTRUCTION, 10, 1.0, generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    assert out.shape == (10, 7) and len(np.unique(out, axis=0)) == 10
    assert calls == [(1, True)] + [(10, False)] * 6  # one prefill with the image, then K rows per action token


def test_action_rows_of_the_head_sample_what_the_full_head_samples(model, image, monkeypatch):
    import vla.vgps.sampling as sampling

    fast = [sample_actions(model, image, INSTRUCTION, 8, 1.0, generator=torch.Generator().manual_seed(s))
            for s in range(5)]
    monkeypatch.setattr(sampling, "action_head", lambda *a: None)  # the full LM head, as LoRA / 8-bit models use
    full = [sample_actions(model, image, INSTRUCTION, 8, 1.0, generator=torch.Generator().manual_seed(s))
            for s in range(5)]
    for a, b in zip(fast, full):
        np.testing.assert_array_equal(a, b)


def test_same_seed_same_samples_and_cold_temperature_is_greedy(model, image):
    a = sample_actions(model, image, INSTRUCTION, 5, 1.0, generator=torch.Generator().manual_seed(3))
    b = sample_actions(model, image, INSTRUCTION, 5, 1.0, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(a, b)
    cold = sample_actions(model, image, INSTRUCTION, 3, 1e-5)
    np.testing.assert_allclose(cold, np.repeat(model.predict_action(image, INSTRUCTION)[None], 3, 0))


def test_bad_sampling_settings(model, image):
    with pytest.raises(GuidanceError, match="n_samples"):
        sample_actions(model, image, INSTRUCTION, 0)
    with pytest.raises(SamplingError, match="temperature"):
        sample_actions(model, image, INSTRUCTION, 4, 0.0)


def test_model_predict_actions_samples_with_n_samples(model, image):
    a = model.predict_actions([image], [INSTRUCTION], n_samples=4, generator=torch.Generator().manual_seed(9))
    b = sample_actions(model, image, INSTRUCTION, 4, 1.0, generator=torch.Generator().manual_seed(9))
    np.testing.assert_array_equal(a, b)
    assert model.predict_actions([image, image], [INSTRUCTION] * 2).shape == (2, 7)  # greedy batch unchanged
    with pytest.raises(vla.errors.InstructionError, match="ONE observation"):
        model.predict_actions([image, image], [INSTRUCTION] * 2, n_samples=3)
