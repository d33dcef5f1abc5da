"""QFunction: exact save/load, scoring inputs, and the errors a user can cause."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vla.vgps import QFunction, get_preset
from vla.vgps.config import NAMED_BOUNDS
from vla.vgps.errors import MismatchError, QCheckpointError, QInputError, ScoreError, UnknownPresetError

INSTRUCTION = "put the red block in the bowl"


@pytest.fixture(scope="module")
def q():
    return QFunction.from_preset("tiny", NAMED_BOUNDS["bridge"], seed=3, info={"algo": "calql"}).eval()


def _image(seed: int, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _actions(k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.05, 0.05, (k, 7)).astype(np.float32)


def test_save_load_round_trip_is_exact(q, tmp_path):
    torch.nn.init.normal_(q.critics[0][0].weight)  # FiLM starts at identity; make every part non-trivial
    q.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["action_bounds"]["high"] == list(NAMED_BOUNDS["bridge"].high)
    assert meta["text_encoder"]["kind"].startswith("llama-tokenizer") and meta["info"] == {"algo": "calql"}
    loaded = QFunction.from_pretrained(tmp_path)
    for key, value in q.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    images, actions = {"primary": _image(1), "wrist": _image(2)}, _actions(10)
    np.testing.assert_array_equal(q.score(images, INSTRUCTION, actions), loaded.score(images, INSTRUCTION, actions))


def test_scores_depend_on_action_image_and_instruction(q):
    torch.manual_seed(0)
    for film in q.encoder.films:  # identity FiLM at init would hide the language path
        torch.nn.init.normal_(film.proj.weight, std=0.5)
    a = _actions(6)
    s = q.score(_image(1), INSTRUCTION, a)
    assert s.shape == (6,) and len(np.unique(s)) == 6
    assert not np.allclose(s, q.score(_image(2), INSTRUCTION, a))
    assert not np.allclose(s, q.score(_image(1), "push the block to the left", a))
    batch = q.score_batch([_image(1)] * 6, [INSTRUCTION] * 6, a)
    np.testing.assert_allclose(batch, s, rtol=1e-5, atol=1e-6)


def test_bad_inputs_raise_typed_errors(q):
    with pytest.raises(MismatchError, match="camera role 'primary'"):
        q.score({"wrist": _image(1)}, INSTRUCTION, _actions(2))
    with pytest.raises(MismatchError, match="6 dims"):
        q.score(_image(1), INSTRUCTION, np.zeros((2, 6)))
    with pytest.raises(QInputError, match="NaN"):
        q.score(_image(1), INSTRUCTION, np.full((2, 7), np.nan))
    with pytest.raises(QInputError, match="non-empty"):
        q.score(_image(1), "  ", _actions(2))
    with pytest.raises(QInputError, match="uint8"):
        q.score(np.zeros((8, 8, 3), np.float32), INSTRUCTION, _actions(2))
    with pytest.raises(QInputError, match=r"\[K>=1"):
        q.score(_image(1), INSTRUCTION, np.zeros((0, 7)))


def test_nan_weights_raise_score_error(tmp_path):
    q = QFunction.from_preset("tiny", NAMED_BOUNDS["bridge"])
    with torch.no_grad():
        q.critics[1][-1].bias.fill_(float("nan"))
    with pytest.raises(ScoreError, match="retrain"):
        q.score(_image(0), INSTRUCTION, _actions(3))


def test_broken_folders_and_presets(q, tmp_path):
    with pytest.raises(QCheckpointError, match="missing"):
        QFunction.from_pretrained(tmp_path)
    q.save_pretrained(tmp_path)
    other = QFunction.from_preset("tiny", NAMED_BOUNDS["bridge"], hidden=(32, 32))
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(QCheckpointError, match="shape mismatch"):
        QFunction.from_pretrained(tmp_path)
    with pytest.raises(UnknownPresetError, match="vgps-resnet34"):
        get_preset("vgps-resnet")


def test_resnet34_preset_is_the_papers_network():
    q = QFunction.from_preset("vgps-resnet34", NAMED_BOUNDS["bridge"]).eval()
    assert q.config.image_size == 256 and q.config.text_dim == 512 and q.encoder.out_dim == 512
    conv_and_heads = sum(p.numel() for m in (q.encoder, q.critics) for p in m.parameters())
    assert 21e6 < conv_and_heads < 26e6  # ResNet-34 trunk + FiLM + 2 critics (V-GPS: 25.6M with its encoder)
    assert q.score(_image(0, 300), INSTRUCTION, _actions(2)).shape == (2,)
