"""LoRA outputs: the adapter folder (adapter files + base reference) and the merged folder load and agree."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vla
from vla.errors import CheckpointError
from vla.train import FinetuneConfig, LoraSettings, OptimSettings, finetune


def test_lora_adapter_folder_and_merged_folder_predict_the_same(colour_data, tmp_path):
    def run(name: str, merge: bool):
        return finetune(FinetuneConfig(base="tiny", out=tmp_path / name, data_dir=colour_data, dataset="colours",
                                       max_steps=2, batch_size=4, merge=merge, eval_every=2, eval_samples=4,
                                       progress=False, lora=LoraSettings(rank=4), optim=OptimSettings(lr=3e-3)))

    adapter, merged = run("adapter", merge=False), run("merged", merge=True)
    assert (adapter / "adapter_config.json").is_file() and (adapter / "base" / "model.safetensors").is_file()
    assert not (merged / "adapter_config.json").exists()
    a, m = vla.OpenVLA.from_pretrained(adapter), vla.OpenVLA.from_pretrained(merged)
    assert a.norm_stats == m.norm_stats and set(a.norm_stats) == {"colours"}
    frame = next(iter(vla.data.load_frames("colours", colour_data)))
    image, text = frame["images"]["primary"], frame["instruction"]
    pv = a.processor.process_images([image])
    torch.testing.assert_close(a.decode_actions(pv, [text], 7).first_logits,
                               m.decode_actions(pv, [text], 7).first_logits, rtol=1e-4, atol=1e-4)
    assert np.array_equal(a.predict_action(image, text), m.predict_action(image, text))
    # the adapter really changed the base: the bare base predicts differently
    base = vla.OpenVLA.from_pretrained(adapter / "base")
    assert not torch.allclose(base.decode_actions(pv, [text], 7).first_logits, m.decode_actions(pv, [text], 7).first_logits)
    # a broken base reference is named
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "nowhere"}))
    with pytest.raises(CheckpointError, match="nowhere"):
        vla.OpenVLA.from_pretrained(adapter)
