"""Fused vision backbone: timm ViTs (DINOv2 + SigLIP), patch features of the second-to-last block.

Weights in an OpenVLA checkpoint use timm's names under `vision_backbone.featurizer.*` and
`vision_backbone.fused_featurizer.*`, except LayerScale, which the original code stored as
`scale_factor` (it monkey-patched timm); `RENAMES` maps those names explicitly.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import timm
import timm.data
import torch
from torch import nn

from vla.errors import ConfigError
from vla.model.config import OpenVLAConfig

# checkpoint name -> our (timm) name; `to_checkpoint_names` inverts it for saving
RENAMES = {".ls1.scale_factor": ".ls1.gamma", ".ls2.scale_factor": ".ls2.gamma"}
BACKBONE_NAMES = ("featurizer", "fused_featurizer")


@dataclasses.dataclass(frozen=True)
class ImageNormalization:
    """Per-backbone pixel normalization, read from the timm id's pretrained config."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str


def _rename(key: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if key.endswith(old):
            return key[: -len(old)] + new
    return key


def from_checkpoint_names(key: str) -> str:
    """Map a checkpoint key to our module's key (LayerScale `scale_factor` -> `gamma`)."""
    return _rename(key, RENAMES)


def to_checkpoint_names(key: str) -> str:
    """Map our key back to the published name (`gamma` -> `scale_factor`)."""
    return _rename(key, {v: k for k, v in RENAMES.items()})


def create_vit(timm_id: str, image_size: int, act_layer: str | None,
               overrides: dict[str, Any] | None) -> timm.models.VisionTransformer:
    """One timm ViT as OpenVLA builds it: no classifier, fixed image size, optional size overrides."""
    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": 0, "img_size": image_size}
    if act_layer is not None:
        kwargs["act_layer"] = act_layer
    kwargs.update(overrides or {})
    try:
        model = timm.create_model(timm_id, **kwargs)
    except RuntimeError as e:  # timm raises RuntimeError for unknown model names
        raise ConfigError(f"timm cannot build {timm_id!r} ({e}); check timm_model_ids in config.json") from e
    if not isinstance(model, timm.models.VisionTransformer):
        raise ConfigError(f"timm id {timm_id!r} is a {type(model).__name__}, not a VisionTransformer")
    return model


class FusedVisionBackbone(nn.Module):
    """One or two ViTs; their patch tokens from the second-to-last block, concatenated on channels."""

    def __init__(self, config: OpenVLAConfig) -> None:
        super().__init__()
        overrides = config.tiny_timm_overrides or (None,) * len(config.timm_model_ids)
        vits = [create_vit(tid, config.image_size, act, dict(ov) if ov else None)
                for tid, act, ov in zip(config.timm_model_ids, config.timm_override_act_layers, overrides)]
        self.featurizer = vits[0]
        self.fused_featurizer = vits[1] if len(vits) > 1 else None
        self.normalizations = tuple(_normalization(v) for v in vits)
        self.embed_dim = sum(v.embed_dim for v in vits)
        grids = {v.patch_embed.grid_size for v in vits}
        if len(grids) != 1:
            raise ConfigError(f"backbones {list(config.timm_model_ids)} give different patch grids {grids}")
        grid = grids.pop()
        self.num_patches = grid[0] * grid[1]
        # features come from the second-to-last block: the last block, the final norm and SigLIP's
        # attention-pool head are stored (checkpoint format) but never run, so they are frozen,
        # which keeps DDP from waiting on gradients that never come
        for name in self.unused_module_names():
            self.get_submodule(name).requires_grad_(False)

    def unused_module_names(self) -> list[str]:
        """Modules kept for the checkpoint format that the forward pass never runs."""
        names = []
        for attr in BACKBONE_NAMES:
            vit = getattr(self, attr)
            if vit is None:
                continue
            names += [f"{attr}.blocks.{len(vit.blocks) - 1}", f"{attr}.norm"]
            names += [f"{attr}.{head}" for head in ("attn_pool", "fc_norm", "head")
                      if getattr(vit, head, None) is not None and any(True for _ in getattr(vit, head).parameters())]
        return names

    @property
    def vits(self) -> list[timm.models.VisionTransformer]:
        return [v for v in (self.featurizer, self.fused_featurizer) if v is not None]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3 * n_backbones, H, W] -> patch features [B, num_patches, embed_dim]."""
        feats = []
        for i, vit in enumerate(self.vits):
            x = pixel_values[:, 3 * i: 3 * i + 3]
            # second-to-last block, no final norm, prefix (class/register) tokens dropped
            (out,) = vit.forward_intermediates(
                x, indices=[len(vit.blocks) - 2], norm=False, stop_early=True,
                output_fmt="NLC", intermediates_only=True)
            feats.append(out)
        return torch.cat(feats, dim=-1)


def _normalization(vit: nn.Module) -> ImageNormalization:
    cfg = timm.data.resolve_model_data_config(vit)
    return ImageNormalization(mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), interpolation=cfg["interpolation"])
