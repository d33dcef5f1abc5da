"""The training forward: cross-entropy on action tokens only, plus action accuracy and L1.

`model(..., labels=...)` would project every position (256 image patches + prompt) onto the
32k-word vocabulary; the loss needs only the positions that predict an action token, so we run the
Llama trunk once and apply `lm_head` to those positions alone (same loss, far less work and memory).
The EOS after the actions is not a training target: the policy decodes a fixed number of tokens.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from vla.model.openvla import OpenVLA
from vla.model.vib import add_kl_term


@dataclasses.dataclass(frozen=True)
class ActionMetrics:
    """Sums over a batch's action tokens, so micro-batches and ranks add up exactly."""

    loss_sum: float
    correct: int  # argmax over the whole vocabulary == target
    l1_sum: float  # |bin centre of the best action token - bin centre of the target|, normalized units
    tokens: int

    def __add__(self, other: "ActionMetrics") -> "ActionMetrics":
        return ActionMetrics(self.loss_sum + other.loss_sum, self.correct + other.correct,
                             self.l1_sum + other.l1_sum, self.tokens + other.tokens)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.tokens, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.tokens, 1)

    @property
    def l1(self) -> float:
        return self.l1_sum / max(self.tokens, 1)


class ActionLoss(nn.Module):
    """Wraps an OpenVLA so DDP/FSDP see one module whose forward returns (loss, logits, targets)."""

    def __init__(self, vla: OpenVLA) -> None:
        super().__init__()
        self.vla = vla
        tok = vla.action_tokenizer
        self.first_id, self.last_id = tok.first_id, tok.last_id
        self.last_kl: float | None = None  # the VIB's KL at the last forward (None without a bottleneck)
        # bin centre of every action token id, indexed by id - first_id (as ActionTokenizer.decode)
        ids = torch.arange(tok.first_id, tok.last_id + 1)
        centres = torch.as_tensor(tok.bin_centers, dtype=torch.float32)
        self.register_buffer("centres", centres[(tok.vocab_size - ids - 1).clamp(max=len(centres) - 1)],
                             persistent=False)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean cross-entropy over action tokens, their logits [n, vocab] and target ids [n]."""
        vla = self.vla
        dev = vla.device
        patches, kl = vla.embed_images_with_kl(pixel_values)  # kl: 0 without a bottleneck
        embeds, mask, labels = vla.merge_image_tokens(input_ids.to(dev), patches, attention_mask.to(dev),
                                                      labels.to(dev))
        hidden = vla.language_model.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        targets = labels[:, 1:]  # position i predicts token i + 1
        where = (targets >= self.first_id) & (targets <= self.last_id)
        logits = vla.language_model.lm_head(hidden[:, :-1][where]).float()
        targets = targets[where]
        loss = F.cross_entropy(logits, targets)
        if vla.config.vib_roles:  # metrics report the action loss alone; the KL is logged beside it
            self.last_kl = float(kl.detach())
        loss = add_kl_term(loss, kl, vla.config)
        return loss, logits, targets

    @torch.no_grad()
    def metrics(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> ActionMetrics:
        """Accuracy and L1 of one forward's outputs (no gradient)."""
        n = int(targets.numel())
        best_action = logits[:, self.first_id: self.last_id + 1].argmax(-1)
        l1 = (self.centres[best_action] - self.centres[targets - self.first_id]).abs().sum()
        ce = float(F.cross_entropy(logits, targets)) if self.vla.config.vib_roles else float(loss)
        return ActionMetrics(ce * n, int((logits.argmax(-1) == targets).sum()), float(l1), n)
