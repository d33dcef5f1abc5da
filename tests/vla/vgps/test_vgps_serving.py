"""`vla serve CKPT --vgps QDIR`: a real ZeroMQ server re-ranks K samples of a tiny checkpoint."""
from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

import vla
from serving.client import PolicyClient
from serving.errors import ServerConfigError
from serving.launch import ServeConfig, make_server
from vla.model.normalization import statistics_from_arrays
from vla.vgps import QFunction
from vla.vgps.config import NAMED_BOUNDS

INSTRUCTION = "pick up the red block"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vgps_serve")
    a = np.random.default_rng(0).uniform(-0.05, 0.05, size=(200, 7))
    a[:, 6] = a[:, 6] > 0
    stats = {"toy": statistics_from_arrays(a, mask=[True] * 6 + [False], num_trajectories=4)}
    vla.OpenVLA.from_preset("tiny", norm_stats=stats, seed=0).save_pretrained(root / "policy")
    QFunction.from_preset("tiny", NAMED_BOUNDS["bridge"], seed=2).save_pretrained(root / "q")
    QFunction.from_preset("tiny", NAMED_BOUNDS["bridge"], camera="wrist").save_pretrained(root / "q_wrist")
    return root


def _serve(config: ServeConfig):
    server = make_server(config)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def _ask(config: ServeConfig, image: np.ndarray, n: int):
    server, thread = _serve(config)
    client = PolicyClient(server.address, timeout_s=60)
    try:
        return [client.act(images={"primary": image}, instruction=INSTRUCTION) for _ in range(n)]
    finally:
        client.close()
        server.close()
        thread.join(timeout=10)


@pytest.mark.slow
def test_server_returns_q_argmax_of_distinct_candidates_reproducibly(folders):
    image = np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    config = ServeConfig(checkpoint=folders / "policy", port=0, vgps=folders / "q", vgps_k=6, vgps_seed=11)
    first = _ask(config, image, 2)
    q = QFunction.from_pretrained(folders / "q")
    for reply in first:
        assert reply.candidates.shape == (6, 7) and len(np.unique(reply.candidates, axis=0)) == 6
        values = q.score(image, INSTRUCTION, reply.candidates)
        np.testing.assert_allclose(reply.values, values, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(reply.action, reply.candidates[int(np.argmax(values))])
    again = _ask(config, image, 2)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.candidates, b.candidates)
        np.testing.assert_array_equal(a.action, b.action)


def test_bad_vgps_settings_are_refused_at_start(folders):
    base = ServeConfig(checkpoint=folders / "policy", port=0, vgps=folders / "q")
    with pytest.raises(ServerConfigError, match="--vgps-k"):
        make_server(dataclasses.replace(base, vgps_k=0))
    with pytest.raises(ServerConfigError, match="--vgps-k"):
        make_server(dataclasses.replace(base, vgps_k=10_000))
    with pytest.raises(ServerConfigError, match="--vgps-beta"):
        make_server(dataclasses.replace(base, vgps_beta=-1.0))
    with pytest.raises(ServerConfigError, match="camera role 'wrist'"):
        make_server(dataclasses.replace(base, vgps=folders / "q_wrist"))
    with pytest.raises(ServerConfigError, match="not a Q-function folder"):
        make_server(dataclasses.replace(base, vgps=folders / "policy"))
    with pytest.raises(ServerConfigError, match="--noop"):
        make_server(ServeConfig(noop=True, port=0, vgps=folders / "q"))


def test_q_of_another_action_space_is_refused(folders, tmp_path):
    from vla.vgps import ActionBounds

    QFunction.from_preset("tiny", ActionBounds((-1.0,) * 6, (1.0,) * 6), action_dim=6).save_pretrained(tmp_path / "q6")
    with pytest.raises(ServerConfigError, match="6-dim"):
        make_server(ServeConfig(checkpoint=folders / "policy", port=0, vgps=tmp_path / "q6"))
