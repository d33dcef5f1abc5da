"""VLA Stack: an OpenVLA-compatible vision-language-action policy, with LoRA and quantized variants."""
from vla.model.openvla import OpenVLA

__all__ = ["OpenVLA"]
