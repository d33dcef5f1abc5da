"""Prompt and image processing, the training encoding, and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vla.errors import ImageError, InstructionError, UnknownUnnormKeyError
from vla.model.openvla import preset_tokenizer
from vla.model.processor import IGNORE_INDEX, PromptTokenizer


def test_llama2_tokenization(reference_dir):
    for tok in (PromptTokenizer.from_folder(reference_dir / "checkpoint"), preset_tokenizer()):
        assert tok.encode("Hello world") == [1, 15043, 3186]
        assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.space_id) == (1, 2, 32000, 29871)


def test_prompt_appends_space_token(tiny_model):
    ids = tiny_model.processor.prompt_ids("Pick up the red block")
    assert ids[:3] == [1, 512, 29901] and ids[-2:] == [29901, 29871]
    # "Out:" lower-cased instruction, nothing stripped
    assert tiny_model.processor.prompt_ids("PICK UP the red block") == ids


def test_training_ids_decode_back_through_prediction_logic(tiny_model):
    """Train/inference consistency: prompt ids + "▁" + 7 action tokens + EOS, labels on the last 8."""
    proc = tiny_model.processor
    normalized = np.random.default_rng(0).uniform(-1, 1, size=(3, 7))
    instructions = ["pick up the cup", "put the spoon in the drawer on the left", "wave"]
    batch = proc.encode_training(instructions, normalized)
    for i, instruction in enumerate(instructions):
        prompt = proc.prompt_ids(instruction)
        n = int(batch["attention_mask"][i].sum())
        row, labels = batch["input_ids"][i, :n].tolist(), batch["labels"][i, :n].tolist()
        assert row[: len(prompt)] == prompt and prompt[-1] == proc.tokenizer.space_id
        assert len(row) == len(prompt) + 7 + 1 and row[-1] == proc.tokenizer.eos_id
        assert labels == [IGNORE_INDEX] * len(prompt) + row[len(prompt):]
        assert (batch["input_ids"][i, n:] == proc.tokenizer.pad_id).all()
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all()
        decoded = proc.action_tokenizer.decode(np.array(row[len(prompt): -1]))
        # bin centres: within half a bin of the encoded action
        assert np.abs(decoded - normalized[i]).max() <= 1.0 / 255 + 1e-9


def test_training_forward_backward(tiny_model, random_image):
    proc = tiny_model.processor
    pv = proc.process_images([random_image(0), random_image(1, (120, 160))])
    batch = proc.encode_training(["pick up the cup", "open the top drawer please"], np.zeros((2, 7)))
    tiny_model.train()
    try:
        out = tiny_model(pixel_values=pv, **batch)
        assert out.logits.shape[:2] == (2, batch["input_ids"].shape[1] + tiny_model.vision_backbone.num_patches)
        assert torch.isfinite(out.loss)
        out.loss.backward()
        assert tiny_model.projector.fc1.weight.grad is not None
        assert tiny_model.vision_backbone.featurizer.patch_embed.proj.weight.grad.abs().sum() > 0
        # DDP needs a gradient for every trainable parameter: never-run layers are frozen
        no_grad = [n for n, p in tiny_model.named_parameters() if p.requires_grad and p.grad is None]
        assert no_grad == []
        assert not tiny_model.vision_backbone.fused_featurizer.attn_pool.q.weight.requires_grad
    finally:
        tiny_model.zero_grad(set_to_none=True)
        tiny_model.eval()


def test_center_crop_flag_changes_pixels(random_image):
    import dataclasses
    from vla.model.processor import ImageTransform
    import vla
    model = vla.OpenVLA.from_preset("tiny")
    crop = ImageTransform(224, model.vision_backbone.normalizations, center_crop_area=0.9)
    image = random_image(3, (256, 256))
    plain = model.processor.process_images([image])
    cropped = crop([image])
    assert cropped.shape == plain.shape and not torch.allclose(cropped, plain)
    assert dataclasses.replace(crop, center_crop_area=None)([image]).equal(plain)


@pytest.mark.parametrize("image, match", [
    (np.zeros((224, 224), np.uint8), "HxWx3"),
    (np.zeros((3, 224, 224), np.uint8), "HxWx3"),
    (np.zeros((224, 224, 3), np.float32), "uint8"),
    (torch.zeros(224, 224, 3, dtype=torch.uint8), "torch.Tensor"),
    ("image.png", "numpy arrays or PIL"),
    (np.zeros((0, 5, 3), np.uint8), "empty"),
])
def test_bad_images(tiny_model, image, match):
    with pytest.raises(ImageError, match=match):
        tiny_model.predict_action(image, "pick up the block")


def test_pil_and_array_agree(tiny_model, random_image):
    image = random_image(7, (100, 130))
    a = tiny_model.processor.process_images([image])
    b = tiny_model.processor.process_images([Image.fromarray(image).convert("RGBA")])
    assert torch.equal(a, b)


def test_bad_instructions_and_keys(tiny_model, random_image):
    image = random_image(0)
    for bad in ("", "   ", None):
        with pytest.raises(InstructionError):
            tiny_model.predict_action(image, bad)
    with pytest.raises(InstructionError, match="one instruction per image"):
        tiny_model.predict_actions([image, image], ["a"])
    with pytest.raises(UnknownUnnormKeyError, match=r"did you mean 'toy'.*known keys: \['toy'\]"):
        tiny_model.predict_action(image, "pick", unnorm_key="tooy")
    action = tiny_model.predict_action(image, "pick")  # one key: None picks it
    assert action.shape == (7,) and action[6] in (tiny_model.action_tokenizer.bin_centers.tolist())
