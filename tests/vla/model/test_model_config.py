"""Config parsing/writing in the published format, and presets."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vla
from vla.errors import CheckpointError, ConfigError, UnknownPresetError
from vla.model.config import OpenVLAConfig, TextConfig
from vla.model.presets import get_preset


def test_reference_config_round_trip(reference_dir):
    raw = json.loads((reference_dir / "checkpoint" / "config.json").read_text())
    config = OpenVLAConfig.from_json(raw)
    assert config.text_config.hidden_size == 32 and config.text_config.num_hidden_layers == 2
    assert config.text_config.rms_norm_eps == 1e-6 and config.text_config.max_position_embeddings == 2048
    assert config.tiny_timm_overrides[0]["embed_dim"] == 48
    assert config.tokenizer_vocab_size == 32000
    written = config.to_json()
    assert written.pop("transformers_version")
    expected = {k: v for k, v in raw.items() if k not in ("norm_stats", "transformers_version")}
    assert written == expected
    assert OpenVLAConfig.from_json(written) == config


def test_7b_text_config_lists_only_differences():
    out = get_preset("openvla-7b").to_json()
    assert out["text_config"] == {"model_type": "llama", "pad_token_id": 32000, "vocab_size": 32064}
    assert "tiny_timm_overrides" not in out
    llama = TextConfig().llama_kwargs()
    assert (llama["hidden_size"], llama["num_hidden_layers"], llama["num_key_value_heads"]) == (4096, 32, 32)


def test_unknown_preset_suggests():
    with pytest.raises(UnknownPresetError, match="did you mean 'tiny'"):
        get_preset("tinny")


@pytest.mark.parametrize("bad, match", [
    ({"model_type": "llava"}, "openvla"),
    ({"image_resize_strategy": "letterbox"}, "resize-naive"),
    ({"timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m"]}, "timm_model_ids"),
    ({"text_config": {"model_type": "mistral"}}, "llama"),
])
def test_bad_config_values(bad, match):
    with pytest.raises(ConfigError, match=match):
        OpenVLAConfig.from_json({**get_preset("openvla-7b").to_json(), **bad})


def test_openvla_7b_on_meta_device():
    model = vla.OpenVLA.from_preset("openvla-7b", device="meta")
    n = sum(p.numel() for p in model.parameters())
    assert 7.4e9 < n < 7.7e9, n
    assert model.language_model.lm_head.weight.shape == (32064, 4096)
    assert model.projector.fc1.weight.shape == (4 * 2176, 2176)
    assert model.vision_backbone.featurizer.embed_dim == 1024 and len(model.vision_backbone.featurizer.blocks) == 24
    assert model.vision_backbone.fused_featurizer.embed_dim == 1152
    assert next(model.parameters()).device == torch.device("meta")
    with pytest.raises(CheckpointError, match="meta device"):
        model.decode_actions(model.processor.process_images([np.zeros((224, 224, 3), np.uint8)]), ["pick"], 7)


def test_tiny_preset_is_small_and_seeded(toy_stats):
    a = vla.OpenVLA.from_preset("tiny", norm_stats=toy_stats, seed=3)
    b = vla.OpenVLA.from_preset("tiny", norm_stats=toy_stats, seed=3)
    c = vla.OpenVLA.from_preset("tiny", norm_stats=toy_stats, seed=4)
    n_bytes = sum(p.numel() * p.element_size() for p in a.parameters())
    assert n_bytes < 12e6
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.projector.fc1.weight, c.projector.fc1.weight)


def test_preset_in_bfloat16_keeps_rope_in_float32(random_image):
    model = vla.OpenVLA.from_preset("tiny", dtype=torch.bfloat16)
    assert model.language_model.lm_head.weight.dtype == torch.bfloat16
    assert model.vision_backbone.featurizer.pos_embed.dtype == torch.bfloat16
    assert model.language_model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert torch.get_default_dtype() == torch.float32
    pv = model.processor.process_images([random_image(0)])
    assert model.decode_actions(pv, ["pick"], 7).token_ids.shape == (1, 7)
