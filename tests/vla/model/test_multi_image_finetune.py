"""`vla finetune --images primary,wrist --vib primary --vib-beta B`: a real run on a two-camera RLDS set."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

import vla
from vla.data.rlds_writer import Episode, write_rlds
from vla.train import FinetuneConfig, OptimSettings, finetune
from vla.train.errors import IncompatibleDataError, TrainConfigError
from vla.train.logs import read_metrics

INSTRUCTION = "pick up the block"


def _episodes(n: int, steps: int, wrist: bool) -> list[Episode]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        images = {"primary": rng.integers(0, 256, (steps, 32, 32, 3), dtype=np.uint8)}
        if wrist:
            images["wrist"] = rng.integers(0, 256, (steps, 32, 32, 3), dtype=np.uint8)
        out.append(Episode(images=images, state=np.zeros((steps, 2), np.float32),
                           action=rng.uniform(-0.05, 0.05, (steps, 7)).astype(np.float32),
                           instruction=INSTRUCTION, success=True))
    return out


@pytest.fixture(scope="module")
def two_camera_data(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("rlds2")
    write_rlds(root, "hand", _episodes(3, 4, wrist=True))
    write_rlds(root, "third", _episodes(2, 4, wrist=False))
    return root


def _config(out: pathlib.Path, data_dir: pathlib.Path, **kw) -> FinetuneConfig:
    base = dict(base="tiny", out=out, data_dir=data_dir, dataset="hand", mode="full", max_steps=2, batch_size=2,
                eval_every=2, eval_samples=2, checkpoint_every=2, log_every=1, progress=False,
                optim=OptimSettings(lr=1e-3), heldout_fraction=0.0, images="primary,wrist", vib="primary",
                vib_beta=0.01)
    return FinetuneConfig(**{**base, **kw})


@pytest.mark.slow
def test_two_camera_vib_run_writes_a_two_camera_checkpoint(two_camera_data, tmp_path):
    torch.set_num_threads(1)
    out = finetune(_config(tmp_path / "run", two_camera_data))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["image_roles"] == ["primary", "wrist"] and cfg["vib_roles"] == ["primary"]
    assert cfg["vib_beta"] == 0.01
    metrics = [m for m in read_metrics(out) if "train/vib_kl" in m]
    assert len(metrics) == 2 and all(m["train/vib_kl"] > 0 for m in metrics)  # logged every step
    model = vla.OpenVLA.from_pretrained(out)
    frame = next(iter(vla.data.load_frames("hand", two_camera_data)))
    action = model.predict_action(images=frame["images"], instruction=INSTRUCTION)
    assert action.shape == (7,) and np.isfinite(action).all()


def test_bad_camera_flags_are_refused(two_camera_data, tmp_path):
    with pytest.raises(TrainConfigError, match="not among the image roles"):
        _config(tmp_path / "a", two_camera_data, images="wrist", vib="primary")
    with pytest.raises(TrainConfigError, match="vib_beta"):
        _config(tmp_path / "b", two_camera_data, vib_beta=-0.1)
    with pytest.raises(TrainConfigError, match="need --images"):
        _config(tmp_path / "c", two_camera_data, images=None, vib="primary")
    with pytest.raises(TrainConfigError, match="--merge"):
        _config(tmp_path / "d", two_camera_data, mode="lora")
    cfg = _config(tmp_path / "e", two_camera_data, images="both-vib", vib=None, vib_beta=0.1)
    assert cfg.cameras() == (("primary", "wrist"), ("primary",), 0.1)
    with pytest.raises(IncompatibleDataError, match=r"'third' has no 'wrist' camera \(its image keys: \['primary'\]"):
        finetune(_config(tmp_path / "f", two_camera_data, dataset="third"))
