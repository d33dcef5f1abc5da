"""The action-token loss: same value as the model's own loss on action labels, and its metrics."""
from __future__ import annotations

import numpy as np
import torch

import vla
from vla.model.processor import IGNORE_INDEX
from vla.train.step import ActionLoss


def _batch(model, n=3, seed=0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(n)]
    actions = rng.uniform(-1, 1, (n, 7))
    instructions = ["pick up the cube", "open the drawer now", "wipe"][:n]  # different lengths: padding
    batch = model.processor.encode_training(instructions, actions)
    batch["pixel_values"] = model.processor.process_images(images)
    return batch, actions


def test_loss_equals_model_loss_on_action_tokens_only():
    model = vla.OpenVLA.from_preset("tiny", seed=1)
    head = ActionLoss(model)
    batch, _ = _batch(model)
    loss, logits, targets = head(**batch)
    labels = batch["labels"].clone()
    labels[labels == model.processor.tokenizer.eos_id] = IGNORE_INDEX  # EOS is not a target here
    ref = model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"], labels=labels).loss
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
    assert logits.shape == (3 * 7, model.config.text_config.vocab_size) and targets.shape == (21,)


def test_metrics_count_correct_tokens_and_l1_of_bin_centres():
    model = vla.OpenVLA.from_preset("tiny", seed=1)
    head = ActionLoss(model)
    batch, actions = _batch(model, n=2)
    _, _, targets = head(**batch)
    tok = model.action_tokenizer
    perfect = torch.full((len(targets), model.config.text_config.vocab_size), -10.0)
    perfect[torch.arange(len(targets)), targets] = 10.0
    m = head.metrics(torch.tensor(0.5), perfect, targets)
    assert (m.correct, m.tokens, m.l1) == (14, 14, 0.0) and m.loss == 0.5
    # predict the neighbouring bin everywhere: accuracy 0, L1 = one bin width (2 / 255) per token
    shifted = targets + torch.where(targets > tok.first_id, -1, 1)
    off = torch.full_like(perfect, -10.0)
    off[torch.arange(len(targets)), shifted] = 10.0
    m = head.metrics(torch.tensor(0.5), off, targets)
    assert m.correct == 0 and np.isclose(m.l1, 2 / 255, atol=1e-6)
    # targets decode to the bin centres of the normalized actions (as ActionTokenizer.decode)
    decoded = head.centres[targets - tok.first_id].numpy()
    assert np.allclose(decoded, tok.decode(tok.encode(actions)).ravel(), atol=1e-6)
