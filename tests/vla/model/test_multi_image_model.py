"""Multi-camera OpenVLA: roles in config.json, role-ordered patch tokens, VIB training term, errors."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import vla
from vla.errors import ConfigError, ImageError
from vla.model.multi_image import set_image_roles
from vla.model.openvla import OpenVLA, preset_tokenizer
from vla.model.presets import get_preset

SIZE = 56  # 4 x 4 patches: the tiny backbone at a quarter of the side keeps these tests fast
ROLES = ("primary", "wrist")


def _small(toy_stats: dict, seed: int = 0) -> OpenVLA:
    cfg = dataclasses.replace(get_preset("tiny"), image_sizes=(SIZE, SIZE))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return OpenVLA(cfg, preset_tokenizer(), toy_stats).eval()


@pytest.fixture(scope="module")
def two_camera(toy_stats) -> OpenVLA:
    return set_image_roles(_small(toy_stats), ROLES, vib_roles=("primary",), vib_beta=0.01)


def _images(random_image, seed: int) -> dict[str, np.ndarray]:
    return {"primary": random_image(seed, (64, 64)), "wrist": random_image(seed + 100, (64, 64))}


def _first_logits(model: OpenVLA, images: dict[str, np.ndarray]) -> torch.Tensor:
    pv = torch.cat([model.processor.process_images([images[r]]) for r in model.config.image_roles], dim=1)
    return model.decode_actions(pv, ["pick up the red block"], n_tokens=1).first_logits[0]


def test_patch_tokens_are_concatenated_in_role_order(two_camera, random_image):
    imgs = _images(random_image, 0)
    pv = {r: two_camera.processor.process_images([imgs[r]]) for r in ROLES}
    both = two_camera.embed_images(torch.cat([pv["primary"], pv["wrist"]], dim=1))
    assert both.shape == (1, 2 * (SIZE // 14) ** 2, 32)
    # each half is that role's image alone through the shared backbone and projector, then its tokens
    one = two_camera.projector(two_camera.vision_backbone(torch.cat([pv["primary"], pv["wrist"]])))
    rt = two_camera.role_tokens
    torch.testing.assert_close(both[:, :16], rt.vib["primary"].mu(one[:1]) + rt.role_embedding[0])
    torch.testing.assert_close(both[:, 16:], one[1:] + rt.role_embedding[1])


def test_both_images_steer_the_action_and_evaluation_is_deterministic(two_camera, random_image):
    base = _first_logits(two_camera, _images(random_image, 0))
    assert torch.equal(base, _first_logits(two_camera, _images(random_image, 0)))  # VIB evaluates on mu
    other_wrist = {**_images(random_image, 0), "wrist": random_image(7, (64, 64))}
    other_primary = {**_images(random_image, 0), "primary": random_image(7, (64, 64))}
    assert not torch.equal(base, _first_logits(two_camera, other_wrist))
    assert not torch.equal(base, _first_logits(two_camera, other_primary))
    a = two_camera.predict_action(images=_images(random_image, 0), instruction="pick up the red block")
    b = two_camera.predict_actions([_images(random_image, 0)] * 2, ["pick up the red block"] * 2)
    assert a.shape == (7,) and np.array_equal(b[0], a) and np.array_equal(b[1], a)


def test_sampling_at_eval_when_asked(toy_stats, random_image):
    model = set_image_roles(_small(toy_stats), ROLES, ("primary",), 0.01, vib_sample_at_eval=True)
    with torch.no_grad():
        model.role_tokens.vib["primary"].log_sigma.bias.fill_(0.0)  # visible noise
    imgs = _images(random_image, 0)
    assert not torch.equal(_first_logits(model, imgs), _first_logits(model, imgs))


def test_training_loss_adds_beta_times_kl(two_camera, random_image):
    imgs = [_images(random_image, s) for s in range(2)]
    pv = torch.cat([two_camera.processor.process_images([x[r] for x in imgs]) for r in ROLES], dim=1)
    enc = two_camera.processor.encode_training(["pick"] * 2, np.zeros((2, 7), np.float32))
    two_camera.train()
    try:
        out = two_camera(pixel_values=pv, **enc)
    finally:
        two_camera.eval()
    assert out.kl.item() > 0
    torch.testing.assert_close(out.loss, out.action_loss + 0.01 * out.kl)
    with torch.no_grad():
        plain = two_camera(pixel_values=pv, **enc)  # eval: z = mu, same KL of the same posterior
    torch.testing.assert_close(plain.kl, out.kl)


def test_save_and_load_round_trip(two_camera, random_image, tmp_path):
    two_camera.save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["image_roles"] == list(ROLES) and cfg["vib_roles"] == ["primary"] and cfg["vib_beta"] == 0.01
    loaded = vla.OpenVLA.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == two_camera.config
    for k, v in two_camera.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    imgs = _images(random_image, 3)
    np.testing.assert_array_equal(loaded.predict_action(images=imgs, instruction="pick"),
                                  two_camera.predict_action(images=imgs, instruction="pick"))


def test_one_camera_checkpoint_keeps_the_published_format(toy_stats, tmp_path):
    model = _small(toy_stats)
    assert model.role_tokens is None
    model.save_pretrained(tmp_path / "one")
    cfg = json.loads((tmp_path / "one" / "config.json").read_text())
    assert not {"image_roles", "vib_roles", "vib_beta", "vib_sample_at_eval"} & cfg.keys()


def test_bad_images_and_roles_are_refused(two_camera, random_image, toy_stats):
    imgs = _images(random_image, 0)
    with pytest.raises(ImageError, match=r"missing \['wrist'\].*'both' rig"):
        two_camera.predict_action(images={"primary": imgs["primary"]}, instruction="pick")
    with pytest.raises(ImageError, match="not used by this checkpoint"):
        two_camera.predict_action(images={**imgs, "secondary": imgs["wrist"]}, instruction="pick")
    with pytest.raises(ImageError, match="one per role"):
        two_camera.predict_action(imgs["primary"], "pick")
    with pytest.raises(ImageError, match="expected"):
        two_camera.embed_images(torch.zeros(1, 6, SIZE, SIZE))
    model = _small(toy_stats)
    with pytest.raises(ConfigError, match="not among the image roles"):
        set_image_roles(model, ("wrist",), vib_roles=("primary",))
    with pytest.raises(ConfigError, match="vib_beta"):
        set_image_roles(model, ROLES, vib_roles=("primary",), vib_beta=-1.0)
    with pytest.raises(ConfigError, match="camera roles"):
        set_image_roles(model, ("primary", "top"))
    assert model.role_tokens is None and model.config.image_roles == ("primary",)  # refused: unchanged


def _primary_sensitivity_after_training(toy_stats, random_image, beta: float) -> float:
    """Train (backbone frozen) a few steps; how much swapping the primary image then moves the logits."""
    model = set_image_roles(_small(toy_stats, seed=1), ROLES, ("primary",), beta, seed=1)
    model.vision_backbone.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    imgs = [_images(random_image, s) for s in range(4)]
    pv = torch.cat([model.processor.process_images([x[r] for x in imgs]) for r in ROLES], dim=1)
    targets = np.stack([np.full(7, x["primary"].mean() / 127.5 - 1) for x in imgs]).astype(np.float32)
    enc = model.processor.encode_training(["pick"] * 4, targets)
    model.train()
    torch.manual_seed(0)
    for _ in range(12):
        opt.zero_grad()
        model(pixel_values=pv, **enc).loss.backward()
        opt.step()
    model.eval()
    base = _first_logits(model, _images(random_image, 0))
    swapped = _first_logits(model, {**_images(random_image, 0), "primary": random_image(50, (64, 64))})
    return float((base - swapped).abs().mean())


@pytest.mark.slow
def test_a_large_beta_cuts_the_primary_stream(toy_stats, random_image):
    open_stream = _primary_sensitivity_after_training(toy_stats, random_image, beta=0.0)
    bottleneck = _primary_sensitivity_after_training(toy_stats, random_image, beta=1.0)
    assert open_stream > 0
    assert bottleneck < 0.25 * open_stream, (bottleneck, open_stream)  # measured: ~0.09x
