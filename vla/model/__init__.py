"""The OpenVLA model: fused DINOv2 + SigLIP ViTs, MLP projector, Llama trunk, action tokens."""
from vla.model.config import OpenVLAConfig, TextConfig
from vla.model.openvla import DecodeResult, OpenVLA
from vla.model.presets import PRESETS, get_preset

__all__ = ["DecodeResult", "OpenVLA", "OpenVLAConfig", "PRESETS", "TextConfig", "get_preset"]
