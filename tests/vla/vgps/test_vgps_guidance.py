"""Re-ranking: argmax / softmax choice, bad settings, a policy that cannot sample, a real policy server."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from vla.vgps import QFunction, ValueGuidedPolicy, choose
from vla.vgps.config import NAMED_BOUNDS
from vla.vgps.errors import GuidanceError, MismatchError, SamplingError
from vla.vgps.guidance import SAMPLING_PATIENCE, SamplingWatch, check_candidates

INSTRUCTION = "pick up the red block"


@pytest.fixture(scope="module")
def q():
    return QFunction.from_preset("tiny", NAMED_BOUNDS["bridge"], seed=1).eval()


def test_beta_zero_takes_argmax_and_beta_positive_follows_softmax():
    values = np.array([0.0, 1.0, 0.5])
    rng = np.random.default_rng(0)
    assert choose(values, 0.0, rng) == 1
    draws = np.bincount([choose(values, 1.0, rng) for _ in range(4000)], minlength=3) / 4000
    expected = np.exp(values) / np.exp(values).sum()
    np.testing.assert_allclose(draws, expected, atol=0.03)
    assert all(choose(values, 1e-4, rng) == 1 for _ in range(50))  # small beta -> argmax


@pytest.mark.parametrize("k, beta, match", [(0, 0.0, "K"), (2.5, 0.0, "K"), (4, -0.1, "beta"),
                                            (4, float("nan"), "beta")])
def test_bad_k_or_beta_raise(q, k, beta, match):
    with pytest.raises(GuidanceError, match=match):
        ValueGuidedPolicy(object(), q, k=k, beta=beta)


def test_candidates_are_checked():
    np.testing.assert_array_equal(check_candidates(np.zeros((4, 7)), 4, 7), 0.0)  # identical: a confident policy
    with pytest.raises(MismatchError, match="6 dims"):
        check_candidates(np.random.default_rng(0).normal(size=(4, 6)), 4, 7)
    with pytest.raises(GuidanceError, match="shape"):
        check_candidates(np.zeros((3, 7)), 4, 7)


def test_policy_without_sampling_interface_is_refused(q):
    with pytest.raises(GuidanceError, match="predict_actions"):
        ValueGuidedPolicy(object(), q, k=4)
    with pytest.raises(SamplingError, match="temperature"):
        ValueGuidedPolicy(object(), q, k=4, temperature=0.0)


def test_client_of_a_policy_that_does_not_sample_gets_sampling_error(q):
    from serving.client import PolicyClient
    from serving.policies import NoopPolicy
    from serving.server import PolicyServer

    server = PolicyServer(NoopPolicy(7), host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = PolicyClient(server.address, timeout_s=10)
    try:
        guided = ValueGuidedPolicy(client, q, k=4)
        image = np.zeros((32, 32, 3), np.uint8)
        for _ in range(SAMPLING_PATIENCE - 1):  # the no-op server returns K zero candidates, step after step
            np.testing.assert_array_equal(guided.act({"primary": image}, INSTRUCTION).action, 0.0)
        with pytest.raises(SamplingError, match=f"identical on each of the first {SAMPLING_PATIENCE} steps"):
            guided.act({"primary": image}, INSTRUCTION)
    finally:
        client.close()
        server.close()
        thread.join(timeout=5)


def test_sampling_watch_forgives_confident_steps_once_a_policy_has_sampled():
    same, spread = np.zeros((4, 7)), np.arange(28.0).reshape(4, 7)
    watch = SamplingWatch(k=4, patience=3)
    watch.observe(same)
    watch.observe(spread)  # it samples: identical candidates later are its confidence
    for _ in range(10):
        watch.observe(same)
    never = SamplingWatch(k=4, patience=3)
    never.observe(same)
    never.observe(same)
    with pytest.raises(SamplingError, match="temperature > 0"):
        never.observe(same)


def test_confident_local_model_is_never_refused(q):
    import vla
    from vla.model.normalization import statistics_from_arrays

    a = np.random.default_rng(0).uniform(-0.05, 0.05, size=(200, 7))
    a[:, 6] = a[:, 6] > 0
    model = vla.OpenVLA.from_preset("tiny", norm_stats={"toy": statistics_from_arrays(a, num_trajectories=4)}, seed=0)
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    guided = ValueGuidedPolicy(model, q, k=4, temperature=1e-5)  # every step's K samples are the greedy action
    greedy = model.predict_action(image, INSTRUCTION)
    for _ in range(SAMPLING_PATIENCE + 2):
        chosen = guided.act({"primary": image}, INSTRUCTION)
        assert (chosen.candidates == chosen.candidates[0]).all()
        np.testing.assert_allclose(chosen.action, greedy)
