"""LoRA via peft: injection, training only adapters, merge/unmerge, saving a merged model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import vla
from vla.errors import LoraError
from vla.model.lora import lora_layers


def _train_step(model, pv, batch, lr=0.5):
    model.train()
    out = model(pixel_values=pv, **batch)
    out.loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.grad is not None:
                p -= lr * p.grad
    model.zero_grad(set_to_none=True)
    model.eval()
    return float(out.loss.detach())


@pytest.mark.slow
def test_lora_trains_only_adapters_and_merges(tmp_path, toy_stats, random_image):
    model = vla.OpenVLA.from_preset("tiny", norm_stats=toy_stats, seed=1)
    proc = model.processor
    pv = proc.process_images([random_image(0)])
    batch = proc.encode_training(["push the block left"], np.array([[0.5] * 6 + [-0.5]]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vla.add_lora(model, rank=4)
    layers = lora_layers(model)
    assert len(layers) > 20
    names = [n for n, _ in layers]
    assert "language_model.lm_head" not in names and "language_model.model.layers.0.self_attn.q_proj" in names
    unused = ["vision_backbone." + u for u in model.vision_backbone.unused_module_names()]
    assert "vision_backbone.fused_featurizer.attn_pool" in unused
    assert not any(n.startswith(u + ".") for n in names for u in unused)  # never-run layers get no adapter
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # zero-initialised B: an untrained adapter changes nothing
    with torch.no_grad():
        assert torch.allclose(_tail(model(pixel_values=pv, **batch)), _tail(_plain(before, toy_stats)(pixel_values=pv, **batch)),
                              atol=1e-5)
    losses = [_train_step(model, pv, batch) for _ in range(2)]
    assert losses[-1] < losses[0]
    with torch.no_grad():
        adapted = _tail(model(pixel_values=pv, **batch))
        vla.merge_lora(model, unload=False)
        torch.testing.assert_close(_tail(model(pixel_values=pv, **batch)), adapted, atol=1e-4, rtol=0)
        vla.unmerge_lora(model)
        torch.testing.assert_close(_tail(model(pixel_values=pv, **batch)), adapted, atol=1e-4, rtol=0)
    with pytest.raises(LoraError, match="merge_lora"):
        model.save_pretrained(tmp_path / "x")
    vla.merge_lora(model)
    assert not lora_layers(model)
    assert set(model.state_dict()) == set(before)
    model.save_pretrained(tmp_path / "merged")
    loaded = vla.OpenVLA.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(_tail(loaded(pixel_values=pv, **batch)), adapted, atol=1e-4, rtol=0)


def _tail(out):
    """Logits at the last 10 positions: the prompt end, the action tokens and EOS."""
    return out.logits[:, -10:]


def _plain(state, stats):
    plain = vla.OpenVLA.from_preset("tiny", norm_stats=stats)
    plain.load_state_dict(state)
    return plain


def test_lora_errors(tiny_model):
    with pytest.raises(LoraError, match="no LoRA adapters"):
        vla.merge_lora(tiny_model)
    with pytest.raises(LoraError, match="match no module"):
        vla.add_lora(vla.OpenVLA.from_preset("tiny"), target_modules=["not_a_layer"])


def _write_adapter(folder, model, base_ref: str, rank: int) -> None:
    """An adapter folder in peft's file names, as `vla finetune` writes it."""
    import json
    from safetensors.torch import save_file
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if ".lora_" in k},
              str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "base_model_name_or_path": base_ref, "r": rank, "lora_alpha": 8.0,
        "lora_dropout": 0.0, "target_modules": [n for n, _ in lora_layers(model)]}))


def test_adapter_folder_loads_on_its_base(tmp_path, toy_stats, random_image):
    base = vla.OpenVLA.from_preset("tiny", seed=5)
    base.save_pretrained(tmp_path / "run" / "base")
    vla.add_lora(base, rank=2, alpha=8.0, target_modules=["q_proj", "v_proj", "fc3"])
    with torch.no_grad():
        for name, p in base.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)  # stands in for training: any non-zero adapter
    _write_adapter(tmp_path / "run", base, "base", rank=2)
    (tmp_path / "run" / "dataset_statistics.json").write_text(__import__("json").dumps(toy_stats))
    loaded = vla.OpenVLA.from_pretrained(tmp_path / "run")
    assert set(loaded.norm_stats) == {"toy"} and len(lora_layers(loaded)) == len(lora_layers(base))
    pv = base.processor.process_images([random_image(9)])
    torch.testing.assert_close(loaded.decode_actions(pv, ["wave"], 1).first_logits,
                               base.decode_actions(pv, ["wave"], 1).first_logits)
    bare = vla.OpenVLA.from_pretrained(tmp_path / "run" / "base")
    assert not torch.allclose(bare.decode_actions(pv, ["wave"], 1).first_logits,
                              base.decode_actions(pv, ["wave"], 1).first_logits)
    _write_adapter(tmp_path / "elsewhere", base, str(tmp_path / "nowhere"), rank=2)
    with pytest.raises(vla.errors.CheckpointError, match="nowhere"):
        vla.OpenVLA.from_pretrained(tmp_path / "elsewhere")
