"""ModelPolicy over a real tiny vla.OpenVLA: bit-exact round trip, 8 concurrent clients, `vla serve CKPT`."""
from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from serving.client import PolicyClient
from serving.errors import RequestRejectedError, ServerConfigError
from serving.policies import ModelPolicy
from serving.server import PolicyServer

REPO = pathlib.Path(__file__).resolve().parents[2]
DIM = 7


def _stats(scale: float) -> dict:
    ones = [scale] * DIM
    action = {"mean": [0.0] * DIM, "std": ones, "min": [-s for s in ones], "max": ones,
              "q01": [-s for s in ones], "q99": ones, "mask": [True] * (DIM - 1) + [False]}
    return {"action": action, "proprio": {k: [0.0] * DIM for k in ("mean", "std", "min", "max", "q01", "q99")},
            "num_transitions": 10, "num_trajectories": 1}


@pytest.fixture(scope="module")
def tiny_model():
    import vla

    return vla.OpenVLA.from_preset("tiny", norm_stats={"bridge_orig": _stats(1.0), "fractal": _stats(0.5)}, seed=3)


@pytest.fixture(scope="module")
def model_server(tiny_model):
    server = PolicyServer(ModelPolicy(tiny_model, unnorm_key="bridge_orig", name="tiny"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.close()
    thread.join(10)


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (224, 224, 3), dtype=np.uint8)


def test_round_trip_equals_in_process_predict_action_bit_for_bit(tiny_model, model_server) -> None:
    with PolicyClient(model_server.address, timeout_s=60) as client:
        meta = client.metadata()
        assert meta["name"] == "tiny" and meta["action_dim"] == DIM and meta["cameras"] == ["primary"]
        assert meta["unnorm_keys"] == ["bridge_orig", "fractal"] and meta["image_size"] == [224, 224]
        for seed, text, key in [(0, "pick up the cup", None), (1, "open the drawer", "fractal")]:
            expected = tiny_model.predict_action(_image(seed), text, unnorm_key=key or "bridge_orig")
            got = client.act(images={"primary": _image(seed)}, instruction=text, unnorm_key=key).action
            assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()


def test_requests_the_model_cannot_serve_are_rejected(model_server) -> None:
    with PolicyClient(model_server.address, timeout_s=60) as client:
        with pytest.raises(RequestRejectedError, match="keyed 'primary'"):
            client.act(images={"cam0": _image(0)}, instruction="x")
        with pytest.raises(RequestRejectedError, match="not in this checkpoint"):
            client.act(images={"primary": _image(0)}, instruction="x", unnorm_key="droid")
        with pytest.raises(RequestRejectedError, match="unsupported options"):
            client.act(images={"primary": _image(0)}, instruction="x", options={"beam_width": 4})
        with pytest.raises(RequestRejectedError, match="n_samples"):  # the model samples, within the limit
            client.act(images={"primary": _image(0)}, instruction="x", options={"n_samples": 10_000})
        reply = client.act(images={"primary": _image(0)}, instruction="x", unnorm_key="fractal",
                           options={"n_samples": 4})
        assert reply.candidates.shape == (4, 7) and len(np.unique(reply.candidates, axis=0)) == 4


def test_unknown_default_unnorm_key_is_a_config_error(tiny_model) -> None:
    with pytest.raises(ServerConfigError, match="known: \\['bridge_orig', 'fractal'\\]"):
        ModelPolicy(tiny_model, unnorm_key="bridge")


@pytest.mark.slow
def test_eight_clients_200_requests_each_answered_once_and_batched(tiny_model, model_server) -> None:
    n_clients, n_requests = 8, 200
    texts = [f"task number {k}" + " please" * k for k in range(n_clients)]  # prompts of different lengths
    expected = [tiny_model.predict_action(_image(k), texts[k], unnorm_key="bridge_orig") for k in range(n_clients)]
    batches_before = sum(model_server.stats.batch_sizes.values())
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            with PolicyClient(model_server.address, timeout_s=120) as client:
                results[k] = [client.act(images={"primary": _image(k)}, instruction=texts[k]) for _ in range(n_requests)]
        except BaseException as e:  # reported below with the client's number
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    for k, replies in results.items():
        assert [r.request_id for r in replies] == list(range(1, n_requests + 1))  # each answered once, in order
        # each reply belongs to this client's observation: the action the model gives it alone
        # (batching pads prompts; the 256-bin tokens come out the same)
        assert all(np.array_equal(r.action, expected[k]) for r in replies)
    sizes = [r.timing["batch_size"] for replies in results.values() for r in replies]
    assert len(sizes) == n_clients * n_requests and max(sizes) > 1
    assert sum(model_server.stats.batch_sizes.values()) - batches_before < n_clients * n_requests


@pytest.mark.slow
def test_vla_serve_loads_a_checkpoint_folder(tiny_model, tmp_path: pathlib.Path) -> None:
    tiny_model.save_pretrained(tmp_path / "ckpt")
    proc = subprocess.Popen([sys.executable, "-m", "scripts.cli", "serve", str(tmp_path / "ckpt"), "--port", "0",
                             "--unnorm-key", "fractal"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("serving on tcp://"), first + proc.stderr.read()
        assert json.loads(proc.stdout.readline())["default_unnorm_key"] == "fractal"
        with PolicyClient(first.split()[-1], timeout_s=120) as client:
            got = client.act(images={"primary": _image(5)}, instruction="stack the blocks").action
        assert np.array_equal(got, tiny_model.predict_action(_image(5), "stack the blocks", unnorm_key="fractal"))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait()


def test_adapter_folders_are_refused_with_the_way_out(tmp_path: pathlib.Path) -> None:
    from serving.policies import load_policy

    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ServerConfigError, match="--merge"):
        load_policy(tmp_path)
