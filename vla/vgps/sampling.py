"""K sampled actions from an OpenVLA for one observation: one prefill, K decodes off its KV cache.

The image + prompt prefix is encoded once; its KV cache is repeated K times along the batch, and
each of the K rows then decodes its action tokens by sampling softmax(logits / T) restricted to the
action bins. Never K full forward passes over the image tokens.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import transformers

from vla.vgps.errors import GuidanceError, SamplingError

logger = logging.getLogger(__name__)


def sample_tokens(logits: torch.Tensor, first: int, last: int, temperature: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    """One token per row drawn from softmax(logits / T) over the action ids [first, last]."""
    return sample_bins(logits[:, first:last + 1], temperature, generator) + first


def sample_bins(action_logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """One column index per row drawn from softmax(action_logits / T) (logits of the action ids only)."""
    probs = torch.softmax(action_logits.float() / temperature, dim=-1)
    # drawn on the CPU (K x 256 numbers): one seeded generator reproduces choices on any device
    return torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(action_logits.device)


def action_head(llm: Any, first: int, last: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """hidden [B, H] -> logits of the action ids only, when the LM head is a plain linear layer (else None).

    The K decodes only ever sample action ids; the full head (32k rows) costs K times more per token
    than the 256 rows they need (measured: half of a K=10 sampling call on the tiny preset)."""
    head = getattr(llm, "lm_head", None)
    decoder = getattr(llm, "model", None)
    if type(head) is not torch.nn.Linear or not isinstance(decoder, transformers.LlamaModel):  # e.g. a PeftModel
        return None
    weight = head.weight[first:last + 1]
    bias = None if head.bias is None else head.bias[first:last + 1]
    return lambda hidden: torch.nn.functional.linear(hidden, weight, bias)


@torch.inference_mode()
def sample_actions(model: Any, image: Any, instruction: str, n_samples: int, temperature: float = 1.0,
                   unnorm_key: str | None = None, generator: torch.Generator | None = None) -> np.ndarray:
    """Un-normalized actions [K, A] sampled from `model` (a vla.OpenVLA) for one image and instruction."""
    from vla.model.llm import CACHE_ARG
    from vla.model.multi_image import stack_role_images
    from vla.model.normalization import select_stats, unnormalize_actions

    if not isinstance(n_samples, (int, np.integer)) or isinstance(n_samples, bool) or n_samples < 1:
        raise GuidanceError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    if not temperature > 0:
        raise SamplingError(f"temperature must be > 0 to sample (got {temperature}); use predict_actions for greedy")
    _, stats = select_stats(model.norm_stats, unnorm_key)
    pixel_values = stack_role_images(model.processor.process_images, [image], model.config.image_roles)
    prompts = model.processor.encode_prompts([instruction])
    dev = model.device
    ids, mask = prompts["input_ids"].to(dev), prompts["attention_mask"].to(dev)
    embeds, mask = model._prefill_inputs(ids, mask, model.embed_images(pixel_values))
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    llm = model.language_model
    cache = transformers.DynamicCache(config=llm.config)
    out = llm(inputs_embeds=embeds, position_ids=position, use_cache=True, logits_to_keep=1, **{CACHE_ARG: cache})
    cache.batch_repeat_interleave(n_samples)  # the one prefix, shared by K decodes
    first, last = model.action_tokenizer.first_id, model.action_tokenizer.last_id
    tokens = [sample_tokens(out.logits[:, -1].expand(n_samples, -1), first, last, temperature, generator)]
    next_pos = position[:, -1:].expand(n_samples, 1) + 1
    head = action_head(llm, first, last)
    for _ in range(stats.dim - 1):
        if head is None:
            out = llm(input_ids=tokens[-1][:, None], position_ids=next_pos, use_cache=True, **{CACHE_ARG: cache})
            tokens.append(sample_tokens(out.logits[:, -1], first, last, temperature, generator))
        else:  # the decoder's last hidden state through the action rows of the head only
            hidden = llm.model(input_ids=tokens[-1][:, None], position_ids=next_pos, use_cache=True,
                               **{CACHE_ARG: cache}).last_hidden_state
            tokens.append(sample_bins(head(hidden[:, -1]), temperature, generator) + first)
        next_pos = next_pos + 1
    ids_out = torch.stack(tokens, 1).cpu().numpy()
    return unnormalize_actions(model.action_tokenizer.decode(ids_out), stats)
