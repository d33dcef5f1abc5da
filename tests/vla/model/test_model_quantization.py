"""8-bit and 4-bit (NF4) bitsandbytes variants on this CPU, and QLoRA forward + backward."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import vla
from vla.errors import CheckpointError, QuantizationError
from vla.model.quantization import probe, quantize

pytestmark = pytest.mark.filterwarnings("ignore:MatMul8bitLt")


@pytest.fixture(scope="module", autouse=True)
def bitsandbytes_cpu():
    for mode in ("8bit", "4bit"):
        reason = probe(mode, "cpu")
        if reason is not None:
            pytest.skip(f"bitsandbytes cannot run {mode} on this CPU: {reason}")


def test_8bit_reference_keeps_tokens(reference_model, reference_dir, reference_cases):
    from PIL import Image
    q = vla.OpenVLA.from_pretrained(reference_dir / "checkpoint", quantization="8bit")
    import bitsandbytes as bnb
    assert isinstance(q.language_model.model.layers[0].self_attn.q_proj, bnb.nn.Linear8bitLt)
    assert type(q.language_model.lm_head) is torch.nn.Linear
    case = reference_cases[0]
    pv = q.processor.process_images([Image.open(reference_dir / case["image"])])
    ours = q.decode_actions(pv, [case["instruction"]], 7)
    full = reference_model.decode_actions(pv, [case["instruction"]], 7)
    assert torch.nn.functional.cosine_similarity(ours.first_logits, full.first_logits).item() > 0.999
    assert ours.token_ids.tolist() == [case["action_token_ids"]]


def test_unknown_mode_and_saving_quantized(tmp_path, toy_stats):
    with pytest.raises(QuantizationError, match="'8bit', '4bit'"):
        quantize(vla.OpenVLA.from_preset("tiny"), "3bit")
    q = quantize(vla.OpenVLA.from_preset("tiny", norm_stats=toy_stats), "8bit")
    with pytest.raises(CheckpointError, match="quantized"):
        q.save_pretrained(tmp_path / "q")
    with pytest.raises(QuantizationError, match="meta"):
        quantize(vla.OpenVLA.from_preset("tiny", device="meta"), "4bit")


@pytest.mark.slow  # bitsandbytes compiles its CPU 4-bit kernels on first use
def test_qlora_forward_backward_and_predict(toy_stats, random_image):
    import bitsandbytes as bnb
    full = vla.OpenVLA.from_preset("tiny", norm_stats=toy_stats, seed=2)
    model = quantize(vla.OpenVLA.from_preset("tiny", norm_stats=toy_stats, seed=2), "4bit")
    assert isinstance(model.language_model.model.layers[0].mlp.up_proj, bnb.nn.Linear4bit)
    image = random_image(4)
    pv = model.processor.process_images([image])
    q_logits = model.decode_actions(pv, ["pick"], 1).first_logits
    f_logits = full.decode_actions(pv, ["pick"], 1).first_logits
    assert torch.nn.functional.cosine_similarity(q_logits, f_logits).item() > 0.95
    vla.add_lora(model, rank=4)
    batch = model.processor.encode_training(["pick up the cup"], np.full((1, 7), 0.25))
    model.train()
    out = model(pixel_values=pv, **batch)
    out.loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(p.grad is not None for p in trainable.values())
    assert any(float(p.grad.abs().sum()) > 0 for n, p in trainable.items() if "lora_B" in n)
    model.zero_grad(set_to_none=True)
    model.eval()
    assert model.predict_action(image, "pick up the cup").shape == (7,)
