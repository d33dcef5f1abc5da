"""Named model presets: the real OpenVLA-7B sizes and a tiny CPU-fast model for tests and demos."""
from __future__ import annotations

import difflib

from vla.errors import UnknownPresetError
from vla.model.config import OpenVLAConfig, TextConfig

# Same sizes as ../shared/reference/openvla-tiny (made by the original code), so our tiny models
# and that reference exercise the same shapes: 256 patches of 48 + 40 channels into a 32-wide Llama.
TINY_TIMM_OVERRIDES = (
    {"embed_dim": 48, "depth": 3, "num_heads": 3, "mlp_ratio": 4.0},
    {"embed_dim": 40, "depth": 4, "num_heads": 2, "mlp_ratio": 3.7362},
)

PRESETS: dict[str, OpenVLAConfig] = {
    "openvla-7b": OpenVLAConfig(torch_dtype="bfloat16"),
    "tiny": OpenVLAConfig(
        torch_dtype="float32",
        tiny_timm_overrides=TINY_TIMM_OVERRIDES,
        text_config=TextConfig(hidden_size=32, intermediate_size=86, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=4),
    ),
}


def get_preset(name: str) -> OpenVLAConfig:
    """The config of a named preset; unknown names raise with a suggestion."""
    if name not in PRESETS:
        near = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" did you mean {near[0]!r}?" if near else ""
        raise UnknownPresetError(f"no model preset {name!r};{hint} known presets: {sorted(PRESETS)}")
    return PRESETS[name]
