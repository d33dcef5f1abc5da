"""VLA Stack: an OpenVLA-compatible vision-language-action policy, with LoRA and quantized variants."""
from vla.model.lora import add_lora, merge_lora, unmerge_lora
from vla.model.openvla import OpenVLA
from vla.model.quantization import quantize

__all__ = ["OpenVLA", "add_lora", "merge_lora", "quantize", "unmerge_lora"]
