"""The Llama language model: `transformers.LlamaForCausalLM` built from our typed TextConfig."""
from __future__ import annotations

import inspect

import torch
import transformers
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from vla.model.config import TextConfig

# sdpa is what produced the reference logits; eager attention in the original code even raised
ATTN_IMPLEMENTATION = "sdpa"
# transformers 5.24 renamed `past_key_values` to `cache` (the old name warns, then goes in 5.40)
CACHE_ARG = "cache" if "cache" in inspect.signature(transformers.LlamaForCausalLM.forward).parameters \
    else "past_key_values"


def llama_config(text: TextConfig) -> transformers.LlamaConfig:
    """The transformers config of the trunk."""
    cfg = transformers.LlamaConfig(**text.llama_kwargs())
    cfg._attn_implementation = ATTN_IMPLEMENTATION
    return cfg


def build_llm(text: TextConfig) -> transformers.LlamaForCausalLM:
    """A randomly initialised Llama trunk of the configured size."""
    return transformers.LlamaForCausalLM(llama_config(text))


def rebuild_rotary(llm: transformers.LlamaForCausalLM, device: torch.device | str) -> None:
    """Recompute RoPE frequencies, which are non-persistent buffers absent from checkpoints.

    Needed after building on the meta device and loading weights with `assign=True`.
    """
    with torch.device("cpu"):  # a surrounding meta-device context must not capture the buffers
        rotary = LlamaRotaryEmbedding(llm.config)
    llm.model.rotary_emb = rotary.to(device)
