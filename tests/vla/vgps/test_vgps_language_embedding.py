"""The dataset-embedding text encoder: a Q-function that FiLMs on the per-step 512-d `language_embedding`
(Bridge: Universal Sentence Encoder) instead of the tokenizer + embedding bag."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from vgps_rlds_helpers import tiny_policy, unit_vectors, write_small

from vla.vgps import QFunction, ValueGuidedPolicy
from vla.vgps.config import NAMED_BOUNDS, TrainConfig
from vla.vgps.data import load_transitions
from vla.vgps.errors import GuidanceError, QInputError, TrainingDataError
from vla.vgps.evaluate import score_dataset
from vla.vgps.train import train_from_dataset

INSTRUCTIONS = ["lift the cup", "push the pot", "open the drawer"]
FEW_STEPS = TrainConfig(steps=20, batch_size=16)


def _actions(k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.05, 0.05, (k, 7)).astype(np.float32)


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def _embedding_q(seed: int = 0) -> QFunction:
    q = QFunction.from_preset("tiny", NAMED_BOUNDS["bridge"], seed=seed, text_encoder="dataset-embedding").eval()
    torch.manual_seed(seed)
    for film in q.encoder.films:  # identity FiLM at init would hide the language path
        torch.nn.init.normal_(film.proj.weight, std=0.5)
    return q


def _assert_same_weights(a: QFunction, b: QFunction) -> None:
    assert a.state_dict().keys() == b.state_dict().keys()
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


@pytest.fixture(scope="module")
def embedded_rlds(tmp_path_factory):
    """A data_dir with `with_vectors` (3 episodes, one unit vector each) and `no_vectors` (the same, without)."""
    root = tmp_path_factory.mktemp("vgps_embedding")
    write_small(root, "with_vectors", INSTRUCTIONS, [True] * 3, embeddings=unit_vectors(3))
    write_small(root, "no_vectors", INSTRUCTIONS, [True] * 3)
    return root


def test_round_trip_is_exact_and_the_folder_records_the_text_encoder(tmp_path):
    q = _embedding_q()
    q.save_pretrained(tmp_path)
    spec = json.loads((tmp_path / "config.json").read_text())["text_encoder"]
    assert spec["kind"] == "dataset-embedding" and spec["key"] == "language_embedding" and spec["dim"] == 512
    assert not (tmp_path / "tokenizer.json").exists()  # nothing to tokenize
    loaded = QFunction.from_pretrained(tmp_path)
    assert loaded.uses_embedding and loaded.tokenizer is None
    _assert_same_weights(q, loaded)
    vector, actions = unit_vectors(1, seed=4)[0], _actions(6)
    np.testing.assert_array_equal(q.score(_image(), None, actions, language_embedding=vector),
                                  loaded.score(_image(), None, actions, language_embedding=vector))


def test_scores_follow_the_embedding_not_the_instruction_text():
    q = _embedding_q()
    a, (u, v) = _actions(5), unit_vectors(2, seed=1)
    s = q.score(_image(), "lift the cup", a, language_embedding=u)
    np.testing.assert_array_equal(s, q.score(_image(), "anything else", a, language_embedding=u))
    assert not np.allclose(s, q.score(_image(), "lift the cup", a, language_embedding=v))
    batch = q.score_batch([_image()] * 5, ["lift the cup"] * 5, a, language_embeddings=np.repeat(u[None], 5, 0))
    np.testing.assert_allclose(batch, s, rtol=1e-5, atol=1e-6)


def test_an_instruction_alone_is_refused_with_how_to_fix_it():
    q = _embedding_q()
    with pytest.raises(QInputError, match=r"no sentence encoder can be downloaded.*language_embedding="):
        q.score(_image(), "lift the cup", _actions(3))
    with pytest.raises(QInputError, match=r"\[512\]"):
        q.score(_image(), "lift the cup", _actions(3), language_embedding=np.zeros(384, np.float32))
    with pytest.raises(QInputError, match="NaN"):
        q.score(_image(), "lift the cup", _actions(3), language_embedding=np.full(512, np.nan, np.float32))
    tokenizer_q = QFunction.from_preset("tiny", NAMED_BOUNDS["bridge"])
    with pytest.raises(QInputError, match="takes no language_embedding"):
        tokenizer_q.score(_image(), "lift the cup", _actions(3), language_embedding=unit_vectors(1)[0])


def test_transitions_carry_each_steps_vector_stored_once(embedded_rlds):
    data = load_transitions("with_vectors", embedded_rlds, TrainConfig(), image_size=16, language_embedding=True)
    assert data.embeddings.shape == (3, 512) and data.embedding.shape == (len(data),) == (15,)
    written = unit_vectors(3)
    for i in range(len(data)):  # each transition got the vector written with its own episode's instruction
        text = data.instructions[data.instruction[i]]
        np.testing.assert_array_equal(data.embeddings_at(np.array([i]))[0], written[INSTRUCTIONS.index(text)])
    plain = load_transitions("with_vectors", embedded_rlds, TrainConfig(), image_size=16)
    assert plain.embeddings is None and plain.embedding is None


def test_trains_on_a_written_dataset_and_round_trips(embedded_rlds, tmp_path, one_torch_thread):
    q = train_from_dataset("with_vectors", embedded_rlds, tmp_path / "q", config=FEW_STEPS, progress=False,
                           language="dataset-embedding")
    loaded = QFunction.from_pretrained(tmp_path / "q")
    assert loaded.uses_embedding and loaded.config.embedding_dim == 512
    _assert_same_weights(q, loaded)
    u, v = unit_vectors(3)[:2]
    s = loaded.score(_image(), None, _actions(4), language_embedding=u)
    assert np.isfinite(s).all() and not np.allclose(s, loaded.score(_image(), None, _actions(4), language_embedding=v))
    report = score_dataset(loaded, "with_vectors", embedded_rlds)  # reads the vectors because Q needs them
    assert report.transitions == 15 and 0 <= report.ranking_accuracy <= 1


def test_a_dataset_without_vectors_is_refused_naming_it_and_its_keys(embedded_rlds, tmp_path, capsys):
    with pytest.raises(TrainingDataError, match=r"'no_vectors' has no per-step 'language_embedding'.*"
                                                r"'language_instruction'.*--language tokenizer"):
        load_transitions("no_vectors", embedded_rlds, TrainConfig(), image_size=16, language_embedding=True)
    from scripts.cli import main

    assert main(["vgps", "train", "--dataset", "no_vectors", "--data-dir", str(embedded_rlds), "--out",
                 str(tmp_path / "q"), "--steps", "2", "--language", "dataset-embedding"]) == 1
    assert "has no per-step 'language_embedding'" in capsys.readouterr().err
    assert main(["vgps", "train", "--dataset", "with_vectors", "--data-dir", str(embedded_rlds), "--out",
                 str(tmp_path / "q"), "--steps", "2", "--batch-size", "8", "--language", "dataset-embedding",
                 "--algo", "iql"]) == 0
    q = QFunction.from_pretrained(tmp_path / "q")
    assert q.uses_embedding and q.info["algo"] == "iql"


def test_all_zero_vectors_mean_no_language_and_are_refused(tmp_path):
    vectors = unit_vectors(2)
    vectors[1] = 0.0
    write_small(tmp_path, "zero_vector", INSTRUCTIONS[:2], [True, True], embeddings=vectors)
    with pytest.raises(TrainingDataError, match="all-zero"):
        load_transitions("zero_vector", tmp_path, TrainConfig(), image_size=16, language_embedding=True)


def test_trains_on_the_real_bridge_shards(shared_dir, tmp_path, one_torch_thread):
    data_dir = shared_dir / "real"
    if not (data_dir / "bridge_dataset").is_dir():
        pytest.skip(f"{data_dir / 'bridge_dataset'} is absent")
    data = load_transitions("bridge_dataset", data_dir, TrainConfig(), image_size=32, language_embedding=True)
    norms = np.linalg.norm(data.embeddings, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-4)  # Universal Sentence Encoder vectors are unit length
    assert len(data.embeddings) == len(data.instructions)  # one vector per distinct instruction
    q = train_from_dataset("bridge_dataset", data_dir, tmp_path / "q", config=FEW_STEPS, progress=False,
                           language="dataset-embedding")
    loaded = QFunction.from_pretrained(tmp_path / "q")
    _assert_same_weights(q, loaded)
    first = np.flatnonzero(data.step == 0)[0]
    image, vector = data.frames[data.obs[first]], data.embeddings_at(np.array([first]))[0]
    candidates = data.actions[:8]
    np.testing.assert_array_equal(q.score(image, None, candidates, language_embedding=vector),
                                  loaded.score(image, None, candidates, language_embedding=vector))


def test_value_guided_policy_needs_the_vector_and_scores_with_it():
    q, vector = _embedding_q(), unit_vectors(1, seed=7)[0]
    images = {"primary": _image(3)}
    guided = ValueGuidedPolicy(tiny_policy(), q, k=4)
    with pytest.raises(GuidanceError, match=r"ValueGuidedPolicy\(\.\.\., language_embedding="):
        guided.act(images, "lift the cup")
    from robot.types import Observation

    obs = Observation(images=images, proprio=None, timestamp=0.0, info={"language_embedding": vector})
    out = guided.act(obs, "lift the cup")
    np.testing.assert_allclose(out.values, q.score(images, None, out.candidates, language_embedding=vector),
                               rtol=1e-5, atol=1e-6)
    assert out.index == int(np.argmax(out.values))
    fixed = ValueGuidedPolicy(tiny_policy(), q, k=4, language_embedding=vector).act(images, "lift the cup")
    np.testing.assert_array_equal(fixed.candidates, out.candidates)  # same seed: same samples, same vector
    np.testing.assert_array_equal(fixed.values, out.values)
    with pytest.raises(QInputError, match=r"\[512\]"):
        ValueGuidedPolicy(tiny_policy(), q, k=4, language_embedding=np.ones(3))


def test_server_refuses_a_q_that_needs_vectors_requests_cannot_carry(tmp_path):
    from serving.errors import ServerConfigError
    from serving.launch import ServeConfig, make_server

    tiny_policy().save_pretrained(tmp_path / "policy")
    _embedding_q().save_pretrained(tmp_path / "q")
    with pytest.raises(ServerConfigError, match="--language tokenizer"):
        make_server(ServeConfig(checkpoint=tmp_path / "policy", port=0, vgps=tmp_path / "q"))
