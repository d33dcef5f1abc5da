"""8-bit (LLM.int8) and 4-bit (NF4) weights via bitsandbytes, as `load_in_8bit/4bit` does for OpenVLA.

Every linear layer except the Llama output head is replaced by its bitsandbytes counterpart
(what transformers' BitsAndBytes loading does to the original model). bitsandbytes >= 0.45 has
CPU kernels for both modes; where a backend lacks them, `quantize` says so instead of failing late.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from vla.errors import QuantizationError
from vla.model.openvla import OpenVLA

log = logging.getLogger(__name__)

MODES = ("8bit", "4bit")
INT8_OUTLIER_THRESHOLD = 6.0  # LLM.int8 default: activations above it stay in 16/32-bit
NF4_BLOCKSIZE = 64  # bitsandbytes' default quantization block
SKIP = ("language_model.lm_head",)


def _bnb():
    try:
        import bitsandbytes
    except ImportError as e:
        raise QuantizationError("8-bit/4-bit loading needs bitsandbytes: pip install 'vla-stack[quant]'") from e
    return bitsandbytes


def _quantized_linear(mode: str, linear: nn.Linear, compute_dtype: torch.dtype, device: torch.device) -> nn.Module:
    bnb = _bnb()
    has_bias = linear.bias is not None
    weight = linear.weight.data.to("cpu")  # bitsandbytes quantizes when the parameter moves to `device`
    if mode == "8bit":
        q = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                has_fp16_weights=False, threshold=INT8_OUTLIER_THRESHOLD, device="cpu")
        q.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias, compute_dtype=compute_dtype,
                              quant_type="nf4", device="cpu")
        q.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4", blocksize=NF4_BLOCKSIZE)
        # bitsandbytes 0.50 repacks 4-bit weights for its AVX512-BF16 CPU kernel on the first eval
        # forward; that layout has no backward (QLoRA after an evaluation fails) and needs widths in
        # multiples of 64 x 32. The generic dequantize path has neither limit, so we keep that one.
        q.support_avx512bf16_for_cpu = False
    if has_bias:
        q.bias = nn.Parameter(linear.bias.data.to("cpu", compute_dtype), requires_grad=False)
    return q.to(device)


def probe(mode: str, device: str | torch.device = "cpu") -> str | None:
    """None if bitsandbytes runs `mode` forward on `device` here; else the reason it does not."""
    try:
        torch_device = torch.device(device)
        q = _quantized_linear(mode, nn.Linear(64, 64), torch.float32, torch_device)
        q(torch.randn(2, 64, device=torch_device))
    except QuantizationError as e:
        return str(e)
    except (RuntimeError, NotImplementedError, AssertionError, TypeError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def quantize(model: OpenVLA, mode: str) -> OpenVLA:
    """Replace linear layers by bitsandbytes 8-bit or NF4 4-bit ones, in place, on the model's device."""
    if mode not in MODES:
        raise QuantizationError(f"quantization {mode!r} is unknown; use one of {list(MODES)} or None")
    if model.quantization is not None:
        raise QuantizationError(f"the model is already quantized ({model.quantization})")
    device = model.device
    if device.type == "meta":
        raise QuantizationError("cannot quantize a model on the meta device; load real weights first")
    reason = probe(mode, device)
    if reason is not None:
        bnb = _bnb()
        raise QuantizationError(
            f"bitsandbytes {bnb.__version__} cannot run {mode} on {device.type} here ({reason}). "
            "Use a CUDA GPU with bitsandbytes' CUDA build, or load without quantization.")
    compute_dtype = model.language_model.lm_head.weight.dtype
    names = [n for n, m in model.named_modules() if type(m) is nn.Linear and n not in SKIP]
    for name in names:
        old = model.get_submodule(name)
        model.set_submodule(name, _quantized_linear(mode, old, compute_dtype, device).train(old.training))
    model.quantization = mode
    log.info("quantized %d linear layers to %s on %s", len(names), mode, device)
    return model
