"""Several images per observation (eye-in-hand rigs): roles, per-role embeddings, the VIB, inputs.

As OpenVLA-OFT does, every image goes through the same fused backbone and projector; here each
role's patch tokens also get a learned role embedding, and roles listed in `vib_roles` pass through
a `VIBHead`. Tokens are concatenated in `image_roles` order. A multi-image batch travels as one
tensor, the roles' 6-channel pixel blocks stacked along channels in role order ([B, 6 * R, H, W]),
so every path that moves `pixel_values` (training batches, DDP) carries it unchanged.

A checkpoint whose `image_roles` is ("primary",) without a bottleneck has none of these modules:
its weights, config.json and outputs are those of a plain OpenVLA checkpoint.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from robot.rigs import NAMED_RIGS
from robot.types import CAMERA_ROLES
from vla.errors import ConfigError, ImageError
from vla.model.vib import VIBHead, check_vib_beta

log = logging.getLogger(__name__)

DEFAULT_ROLES = ("primary",)  # what a published OpenVLA checkpoint sees: the third-person camera
ROLE_EMBEDDING_STD = 0.02  # init scale of the role embeddings, Llama's initializer_range
# rig names for the eye-in-hand benchmark; `both-vib` is `both` with the bottleneck on `primary`
RIG_ROLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    **{name: (roles, ()) for name, roles in NAMED_RIGS.items()},
    "both-vib": (NAMED_RIGS["both"], ("primary",)),
}


def check_image_roles(image_roles: Sequence[str], vib_roles: Sequence[str], vib_beta: float) -> None:
    """Refuse unknown or repeated roles, a bottleneck on a role the model does not see, a bad beta."""
    roles = list(image_roles)
    if not roles:
        raise ConfigError("image_roles is empty; give at least one camera role, e.g. ['primary']")
    unknown = [r for r in roles if r not in CAMERA_ROLES]
    if unknown:
        raise ConfigError(f"image_roles {unknown} are not camera roles; roles are {list(CAMERA_ROLES)}")
    if len(set(roles)) != len(roles):
        raise ConfigError(f"image_roles {roles} repeat a role; list each camera role once")
    stray = [r for r in vib_roles if r not in roles]
    if stray:
        raise ConfigError(f"vib roles {stray} are not among the image roles {roles}; "
                          f"put the bottleneck on one of {roles} (e.g. --vib primary with --images primary,wrist)")
    if len(set(vib_roles)) != len(list(vib_roles)):
        raise ConfigError(f"vib roles {list(vib_roles)} repeat a role")
    check_vib_beta(vib_beta)
    if vib_roles and vib_beta == 0:
        log.warning("vib roles %s with vib_beta 0: the bottleneck is trained without its KL term", list(vib_roles))


def has_role_tokens(image_roles: Sequence[str], vib_roles: Sequence[str]) -> bool:
    """Whether a model needs `RoleTokens` (several roles or a bottleneck); a plain OpenVLA does not."""
    return len(image_roles) > 1 or len(vib_roles) > 0


def rig_for_roles(image_roles: Sequence[str]) -> str | None:
    """The robot rig (robot.rigs.NAMED_RIGS) that gives exactly these roles, None when none does."""
    return next((name for name, roles in NAMED_RIGS.items() if tuple(roles) == tuple(image_roles)), None)


class RoleTokens(nn.Module):
    """Adds each role's learned embedding to its patch tokens, bottlenecks `vib_roles`, concatenates."""

    def __init__(self, image_roles: Sequence[str], vib_roles: Sequence[str], dim: int) -> None:
        super().__init__()
        self.roles, self.vib_roles = tuple(image_roles), tuple(vib_roles)
        self.role_embedding = nn.Parameter(torch.empty(len(self.roles), dim))
        self.vib = nn.ModuleDict({role: VIBHead(dim) for role in self.vib_roles})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Role embeddings ~ N(0, ROLE_EMBEDDING_STD); VIB heads at identity means (see vib.py)."""
        if self.role_embedding.device.type == "meta":
            return
        with torch.no_grad():
            nn.init.normal_(self.role_embedding, std=ROLE_EMBEDDING_STD)
        for head in self.vib.values():
            head.reset_parameters()

    def forward(self, patches: torch.Tensor, sample: bool,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """patches [B, R, P, D] in role order -> (tokens [B, R * P, D], KL summed over the VIB roles)."""
        b, r, p, d = patches.shape
        if r != len(self.roles):
            raise ImageError(f"got patches of {r} images; this model takes {len(self.roles)} ({list(self.roles)})")
        kl = patches.new_zeros((), dtype=torch.float32)
        parts = []
        for i, role in enumerate(self.roles):
            x = patches[:, i]
            if role in self.vib:
                out = self.vib[role](x, sample=sample, generator=generator)
                x, kl = out.z, kl + out.kl
            parts.append(x + self.role_embedding[i].to(x.dtype))
        return torch.cat(parts, dim=1), kl


def split_roles(pixel_values: torch.Tensor, n_roles: int, channels_per_image: int) -> torch.Tensor:
    """[B, C * R, H, W] -> [B * R, C, H, W] (row b * R + i is role i of sample b), shapes checked."""
    want = channels_per_image * n_roles
    if pixel_values.ndim != 4 or pixel_values.shape[1] != want:
        raise ImageError(f"pixel_values have shape {tuple(pixel_values.shape)}; expected [B, {want}, H, W] "
                         f"({n_roles} image(s) of {channels_per_image} channels, stacked in role order) from "
                         "model.processor.process_images / stack_role_images")
    b, _, h, w = pixel_values.shape
    return pixel_values.reshape(b * n_roles, channels_per_image, h, w)


def images_by_role(images: Any, image_roles: Sequence[str]) -> Mapping[str, Any]:
    """One observation's images as {role: image}, checked against the roles the checkpoint needs."""
    roles = tuple(image_roles)
    if not isinstance(images, Mapping):
        if len(roles) == 1:
            return {roles[0]: images}
        raise ImageError(f"this checkpoint takes {len(roles)} images, one per role {list(roles)}; pass "
                         f"images={{{', '.join(repr(r) + ': ...' for r in roles)}}} instead of one image")
    missing = [r for r in roles if r not in images]
    unknown = [r for r in images if r not in roles]
    if missing or unknown:
        rig = rig_for_roles(roles)
        hint = f"the {rig!r} rig provides them" if rig else "map your cameras to these roles with a custom rig"
        parts = [f"missing {missing}" if missing else "", f"not used by this checkpoint: {unknown}" if unknown else ""]
        raise ImageError(f"images keyed {sorted(images)}: {'; '.join(p for p in parts if p)}. The checkpoint needs "
                         f"roles {list(roles)} ({hint}; robot.rigs.apply_rig keys camera images by role)")
    return images


def stack_role_images(process_images: Any, images: Sequence[Any], image_roles: Sequence[str]) -> torch.Tensor:
    """Pixel values [B, 6 * R, H, W] for a batch of observations ({role: image} each, or plain images)."""
    per_obs = [images_by_role(x, image_roles) for x in images]
    blocks = [process_images([obs[role] for obs in per_obs]) for role in image_roles]
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)



def set_image_roles(model: Any, image_roles: Sequence[str], vib_roles: Sequence[str] = (), vib_beta: float = 0.0,
                    vib_sample_at_eval: bool = False, seed: int = 0) -> Any:
    """Give a model (e.g. a one-camera base before fine-tuning) these roles, in place; new modules seeded.

    The backbone, projector and Llama are kept; role embeddings and VIB heads the model had for roles
    it keeps are kept too, new ones start from `RoleTokens.reset_parameters` with `seed`.
    """
    image_roles, vib_roles = tuple(image_roles), tuple(vib_roles)
    config = dataclasses.replace(model.config, image_roles=image_roles, vib_roles=vib_roles, vib_beta=vib_beta,
                                 vib_sample_at_eval=vib_sample_at_eval)  # validates (ConfigError)
    old: RoleTokens | None = model.role_tokens
    new = None
    if has_role_tokens(image_roles, vib_roles):
        ref = next(model.projector.parameters())
        with torch.random.fork_rng(devices=[]), torch.device(ref.device):
            torch.manual_seed(seed)
            new = RoleTokens(image_roles, vib_roles, model.config.text_config.hidden_size).to(ref.dtype)
        if old is not None:
            with torch.no_grad():
                for i, role in enumerate(image_roles):
                    if role in old.roles:
                        new.role_embedding[i] = old.role_embedding[old.roles.index(role)]
                for role in vib_roles:
                    if role in old.vib:
                        new.vib[role].load_state_dict(old.vib[role].state_dict())
    model.config = config
    model.role_tokens = new
    log.info("model reads images %s (VIB on %s, beta %g)", list(image_roles), list(vib_roles), vib_beta)
    return model
