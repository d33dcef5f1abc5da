"""Role bookkeeping for multi-camera models: validation, rig hints, role-ordered tokens."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vla.errors import ConfigError, ImageError
from vla.model.multi_image import (RoleTokens, check_image_roles, has_role_tokens, images_by_role, rig_for_roles,
                                   split_roles, stack_role_images)


def test_roles_are_validated():
    check_image_roles(("primary", "wrist"), ("primary",), 1e-3)
    for roles, vib, beta, match in [((), (), 0.0, "empty"), (("primary", "top"), (), 0.0, "camera roles"),
                                    (("wrist", "wrist"), (), 0.0, "repeat"),
                                    (("wrist",), ("primary",), 0.1, "not among the image roles"),
                                    (("primary",), ("primary",), -0.1, "vib_beta")]:
        with pytest.raises(ConfigError, match=match):
            check_image_roles(roles, vib, beta)


def test_rigs_and_modules_needed():
    assert rig_for_roles(("primary", "wrist")) == "both" and rig_for_roles(("wrist",)) == "eye_in_hand"
    assert rig_for_roles(("secondary",)) is None
    assert not has_role_tokens(("primary",), ()) and has_role_tokens(("primary",), ("primary",))
    assert has_role_tokens(("primary", "wrist"), ())


def test_images_by_role_names_the_fix():
    img = np.zeros((8, 8, 3), np.uint8)
    assert images_by_role(img, ("primary",)) == {"primary": img}
    with pytest.raises(ImageError, match=r"missing \['wrist'\].*'both' rig"):
        images_by_role({"primary": img}, ("primary", "wrist"))
    with pytest.raises(ImageError, match="one per role"):
        images_by_role(img, ("primary", "wrist"))
    seen = []
    out = stack_role_images(lambda xs: seen.append(len(xs)) or torch.full((len(xs), 6, 2, 2), float(len(seen))),
                            [{"wrist": img, "primary": img}] * 3, ("primary", "wrist"))
    assert out.shape == (3, 12, 2, 2) and seen == [3, 3]
    assert float(out[0, 0, 0, 0]) == 1.0 and float(out[0, 6, 0, 0]) == 2.0  # primary block first


def test_role_tokens_concatenate_in_role_order():
    torch.manual_seed(0)
    rt = RoleTokens(("primary", "wrist"), ("primary",), 4).eval()
    patches = torch.randn(2, 2, 3, 4)
    tokens, kl = rt(patches, sample=False)
    assert tokens.shape == (2, 6, 4) and kl.item() > 0
    torch.testing.assert_close(tokens[:, 3:], patches[:, 1] + rt.role_embedding[1])
    torch.testing.assert_close(tokens[:, :3], rt.vib["primary"].mu(patches[:, 0]) + rt.role_embedding[0])
    with pytest.raises(ImageError, match="takes 2"):
        rt(torch.randn(2, 3, 3, 4), sample=False)
    flat = split_roles(torch.arange(2 * 12 * 2.0).reshape(2, 12, 2, 1), 2, 6)
    assert flat.shape == (4, 6, 2, 1) and float(flat[1, 0, 0, 0]) == 12.0  # row 1: sample 0, wrist
    with pytest.raises(ImageError, match=r"expected \[B, 12"):
        split_roles(torch.zeros(1, 6, 2, 2), 2, 6)
