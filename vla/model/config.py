"""The OpenVLA config.json as typed, frozen dataclasses: read and written in the published format.

The published `openvla/openvla-7b` config.json is `OpenVLAConfig` from the original
`configuration_prismatic.py`; its `text_config` lists only what differs from transformers'
`LlamaConfig` defaults. We keep those defaults here explicitly (Llama-2-7B sizes) so the file
means the same thing whatever transformers version reads it.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

import transformers

from vla.errors import ConfigError
from vla.model.multi_image import check_image_roles

log = logging.getLogger(__name__)

# Keys transformers writes into every config.json that carry no architecture information.
HF_BOILERPLATE_KEYS = ("architectures", "auto_map", "transformers_version", "_name_or_path", "model_type")
SUPPORTED_RESIZE = ("resize-naive",)
DTYPE_NAMES = ("float32", "bfloat16", "float16")
MULTI_IMAGE_FIELDS = ("image_roles", "vib_roles", "vib_beta", "vib_sample_at_eval")
RTH_CONFIG_KEY = "rth"  # config.json table of an RT-H checkpoint (vla/rth/query.py writes and reads it)
EXTENSION_KEYS = (RTH_CONFIG_KEY,)  # tables kept in `extra` for other packages: expected, not warned about


def _expect_model_type(d: Mapping[str, Any], want: str, where: str, why: str) -> dict[str, Any]:
    """A copy of `d` without `model_type`, which must be `want` when present."""
    d = dict(d)
    model_type = d.pop("model_type", want)
    if model_type != want:
        raise ConfigError(f"{where} has model_type {model_type!r}, not {want!r}; {why}")
    return d


def _pop_fields(cls: type, d: dict[str, Any], skip: tuple[str, ...]) -> dict[str, Any]:
    """Remove and return the entries of `d` that are fields of dataclass `cls`."""
    names = {f.name for f in dataclasses.fields(cls)} - set(skip)
    return {k: d.pop(k) for k in list(d) if k in names}


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The Llama trunk; defaults are transformers' LlamaConfig defaults = Llama-2-7B sizes."""

    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None: same as num_attention_heads (no GQA)
    vocab_size: int = 32064  # 32000 Llama-2 ids + <PAD>, padded to a multiple of 64
    pad_token_id: int = 32000
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False
    torch_dtype: str | None = None  # informational; the top-level torch_dtype decides
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # other keys, kept for round trips

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TextConfig":
        """Parse a `text_config` dict (absent keys take the Llama-2-7B defaults)."""
        d = _expect_model_type(d, "llama", "text_config", "only Llama trunks are supported")
        known = _pop_fields(cls, d, skip=("extra",))
        return cls(**known, extra=d)

    def to_json(self) -> dict[str, Any]:
        """Only what differs from the defaults, plus the keys the 7B file always lists."""
        out: dict[str, Any] = {}
        default = TextConfig()
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value != getattr(default, f.name) or f.name in ("vocab_size", "pad_token_id"):
                out[f.name] = value
        out.update(self.extra)
        out["model_type"] = "llama"
        return dict(sorted(out.items()))

    def llama_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `transformers.LlamaConfig`."""
        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("extra", "torch_dtype", "rope_theta")}
        kwargs["num_key_value_heads"] = self.num_key_value_heads or self.num_attention_heads
        # transformers 5 takes RoPE settings as rope_parameters; 4.x wrote rope_theta at top level
        kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": self.rope_theta}
        kwargs.update({k: v for k, v in self.extra.items() if not k.startswith("_")})
        return kwargs


@dataclasses.dataclass(frozen=True)
class OpenVLAConfig:
    """Architecture of an OpenVLA model, field for field as in the published config.json."""

    vision_backbone_id: str = "dinosiglip-vit-so-224px"
    # one timm id per backbone; fused = DINOv2 first, SigLIP second, features concatenated
    timm_model_ids: tuple[str, ...] = ("vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224")
    timm_override_act_layers: tuple[str | None, ...] = (None, None)
    # timm VisionTransformer kwargs per backbone replacing the id's sizes (tiny test checkpoints only)
    tiny_timm_overrides: tuple[Mapping[str, Any], ...] | None = None
    image_sizes: tuple[int, ...] = (224, 224)
    image_resize_strategy: str = "resize-naive"
    # our extension: checkpoints trained with random-resized-crop augmentation evaluate on the
    # centre crop of this area fraction (OpenVLA uses 0.9); None = no crop
    eval_center_crop_area: float | None = None
    use_fused_vision_backbone: bool = True
    arch_specifier: str = "no-align+fused-gelu-mlp"
    llm_backbone_id: str = "llama2-7b-pure"
    hf_llm_id: str = "meta-llama/Llama-2-7b-hf"
    llm_max_length: int = 2048
    output_projector_states: bool = False
    pad_token_id: int = 32000
    pad_to_multiple_of: int = 64  # embedding rows beyond the tokenizer's vocabulary
    n_action_bins: int = 256
    torch_dtype: str = "bfloat16"  # dtype of the stored weights
    text_config: TextConfig = TextConfig()
    # our extension (vla.model.multi_image): cameras by role, patch tokens concatenated in this order;
    # a published checkpoint sees ("primary",) and has no key for it
    image_roles: tuple[str, ...] = ("primary",)
    vib_roles: tuple[str, ...] = ()  # roles whose tokens pass a variational information bottleneck
    vib_beta: float = 0.0  # weight of the bottleneck's KL term in the training loss
    vib_sample_at_eval: bool = False  # evaluate on a sample z (as the paper's code) instead of the mean
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # unknown keys, kept for round trips

    def __post_init__(self) -> None:
        n = len(self.timm_model_ids)
        if n != (2 if self.use_fused_vision_backbone else 1):
            raise ConfigError(
                f"use_fused_vision_backbone={self.use_fused_vision_backbone} needs "
                f"{2 if self.use_fused_vision_backbone else 1} timm_model_ids, got {list(self.timm_model_ids)}")
        for name, value in (("timm_override_act_layers", self.timm_override_act_layers),
                            ("image_sizes", self.image_sizes)):
            if len(value) != n:
                raise ConfigError(f"{name} has {len(value)} entries for {n} timm_model_ids; give one per backbone")
        if self.tiny_timm_overrides is not None and len(self.tiny_timm_overrides) != n:
            raise ConfigError(f"tiny_timm_overrides has {len(self.tiny_timm_overrides)} entries for {n} backbones")
        if len(set(self.image_sizes)) != 1:
            raise ConfigError(f"image_sizes {list(self.image_sizes)} differ; all backbones must share one size")
        if self.image_resize_strategy not in SUPPORTED_RESIZE:
            raise ConfigError(
                f"image_resize_strategy {self.image_resize_strategy!r} is not supported; "
                f"supported: {list(SUPPORTED_RESIZE)} (the strategy every released OpenVLA uses)")
        if self.eval_center_crop_area is not None and not 0.0 < self.eval_center_crop_area <= 1.0:
            raise ConfigError(f"eval_center_crop_area must be in (0, 1], got {self.eval_center_crop_area}")
        if self.torch_dtype not in DTYPE_NAMES:
            raise ConfigError(f"torch_dtype {self.torch_dtype!r} is not one of {list(DTYPE_NAMES)}")
        check_image_roles(self.image_roles, self.vib_roles, self.vib_beta)
        if self.text_config.vocab_size <= self.pad_to_multiple_of + self.n_action_bins:
            raise ConfigError(
                f"text_config.vocab_size {self.text_config.vocab_size} leaves no room for "
                f"{self.n_action_bins} action bins after {self.pad_to_multiple_of} padding rows")

    @property
    def image_size(self) -> int:
        return self.image_sizes[0]

    @property
    def tokenizer_vocab_size(self) -> int:
        """Ids the tokenizer can produce; the action bins are the last `n_action_bins` of these."""
        return self.text_config.vocab_size - self.pad_to_multiple_of

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "OpenVLAConfig":
        """Parse a config.json dict (without `norm_stats`, which the checkpoint keeps apart)."""
        d = _expect_model_type(d, "openvla", "config.json", "this loader reads OpenVLA checkpoints "
                               "(openvla/openvla-7b format) only")
        d.pop("norm_stats", None)
        for key in HF_BOILERPLATE_KEYS:
            d.pop(key, None)
        kwargs = {k: tuple(v) if isinstance(v, list) else v
                  for k, v in _pop_fields(cls, d, skip=("extra", "text_config")).items()}
        if "text_config" in d:
            kwargs["text_config"] = TextConfig.from_json(d.pop("text_config"))
        unknown = sorted(set(d) - set(EXTENSION_KEYS))
        if unknown:
            log.warning("config.json keys not used by this model (kept for saving): %s", unknown)
        return cls(**kwargs, extra=d)

    def to_json(self) -> dict[str, Any]:
        """The config.json dict, as the original OpenVLAConfig writes it (minus `norm_stats`)."""
        out: dict[str, Any] = {
            "architectures": ["OpenVLAForActionPrediction"],
            "auto_map": {
                "AutoConfig": "configuration_prismatic.OpenVLAConfig",
                "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction",
            },
            "model_type": "openvla",
            "transformers_version": transformers.__version__,
        }
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                continue
            if f.name == "text_config":
                value = value.to_json()
            elif f.name in ("tiny_timm_overrides", "eval_center_crop_area") and value is None:
                continue  # keys a published folder lacks stay absent
            elif f.name in MULTI_IMAGE_FIELDS and value == f.default:
                continue  # a one-camera checkpoint keeps the published format
            elif isinstance(value, tuple):
                value = [dict(v) if isinstance(v, Mapping) else v for v in value]
            out[f.name] = value
        out.update(self.extra)
        return dict(sorted(out.items()))
