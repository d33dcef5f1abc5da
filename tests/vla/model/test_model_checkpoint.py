"""Saving and loading checkpoint folders, and errors for folders that are not checkpoints."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import vla
from vla.errors import CheckpointError, StatisticsError


def test_tiny_save_load_round_trip(tmp_path, tiny_model, random_image):
    tiny_model.save_pretrained(tmp_path / "ckpt")
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    for required in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                     "dataset_statistics.json", "preprocessor_config.json", "generation_config.json"):
        assert required in names
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["norm_stats"].keys() == {"toy"} and cfg["model_type"] == "openvla"
    loaded = vla.OpenVLA.from_pretrained(tmp_path / "ckpt")
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    image = random_image(5)
    np.testing.assert_array_equal(tiny_model.predict_action(image, "open the drawer"),
                                  loaded.predict_action(image, "open the drawer"))


def test_reference_resave_keeps_names_and_values(tmp_path, reference_dir, reference_model):
    from safetensors import safe_open
    reference_model.save_pretrained(tmp_path / "again")
    src, dst = reference_dir / "checkpoint" / "model.safetensors", tmp_path / "again" / "model.safetensors"
    with safe_open(str(src), "pt") as a, safe_open(str(dst), "pt") as b:
        assert set(a.keys()) == set(b.keys())  # LayerScale written back as scale_factor
        for key in a.keys():
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key
    for name in ("preprocessor_config.json", "tokenizer.json"):
        assert json.loads((tmp_path / "again" / name).read_text()) == \
            json.loads((reference_dir / "checkpoint" / name).read_text())


def test_dtype_on_load(reference_dir):
    model = vla.OpenVLA.from_pretrained(reference_dir / "checkpoint", dtype=torch.bfloat16)
    assert model.language_model.lm_head.weight.dtype == torch.bfloat16
    assert model.language_model.model.rotary_emb.inv_freq.dtype == torch.float32


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        vla.OpenVLA.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not an OpenVLA checkpoint folder.*config.json"):
        vla.OpenVLA.from_pretrained(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="FOLDER"):
        vla.OpenVLA.from_pretrained(tmp_path / "file")


def _copy_with_config(src, folder, edit) -> None:
    """Copy a checkpoint folder and rewrite its config.json through `edit(cfg)`."""
    shutil.copytree(src, folder)
    _edit_config(folder, edit)


def _edit_config(folder, edit) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    edit(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_weights_that_do_not_fit(tmp_path, reference_dir):
    folder = tmp_path / "mixed"
    _copy_with_config(reference_dir / "checkpoint", folder, lambda c: c["text_config"].update(num_hidden_layers=3))
    with pytest.raises(CheckpointError, match="1 of another shape|missing"):
        vla.OpenVLA.from_pretrained(folder)


def test_missing_statistics(tmp_path, reference_dir, random_image):
    folder = tmp_path / "nostats"
    _copy_with_config(reference_dir / "checkpoint", folder, lambda c: c.pop("norm_stats"))
    model = vla.OpenVLA.from_pretrained(folder)  # a base model to fine-tune needs no statistics
    with pytest.raises(StatisticsError, match="dataset_statistics.json"):
        model.predict_action(random_image(0), "pick up the block")
    _edit_config(folder, lambda c: c.update(norm_stats={"bridge_orig": {"action": {"mean": [0.0] * 7}}}))
    with pytest.raises(StatisticsError, match="q01"):
        vla.OpenVLA.from_pretrained(folder)


def test_dataset_statistics_file_adds_keys(tmp_path, reference_dir, toy_stats):
    folder = tmp_path / "finetuned"
    shutil.copytree(reference_dir / "checkpoint", folder)
    (folder / "dataset_statistics.json").write_text(json.dumps(toy_stats))
    model = vla.OpenVLA.from_pretrained(folder)
    assert set(model.norm_stats) == {"bridge_orig", "fractal20220817_data", "toy"}


def test_sharded_weights_load_like_one_file(tmp_path, reference_dir, reference_model):
    """openvla-7b is published as shards + model.safetensors.index.json; the same loader reads them."""
    from safetensors.torch import load_file, save_file
    folder = tmp_path / "sharded"
    shutil.copytree(reference_dir / "checkpoint", folder)
    tensors = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in shards.items():
        save_file({k: tensors[k] for k in part}, str(folder / name), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: name for name, part in shards.items() for k in part}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    loaded = vla.OpenVLA.from_pretrained(folder)
    for k, v in reference_model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="00002"):
        vla.OpenVLA.from_pretrained(folder)


def test_center_crop_flag_travels_with_the_checkpoint(tmp_path, tiny_model, random_image):
    tiny_model.save_pretrained(tmp_path / "plain")
    _copy_with_config(tmp_path / "plain", tmp_path / "aug", lambda c: c.update(eval_center_crop_area=0.9))
    aug = vla.OpenVLA.from_pretrained(tmp_path / "aug")
    assert aug.processor.image_transform.center_crop_area == 0.9
    image = random_image(2, (240, 320))
    assert not torch.equal(aug.processor.process_images([image]), tiny_model.processor.process_images([image]))
    aug.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["eval_center_crop_area"] == 0.9
    assert "eval_center_crop_area" not in json.loads((tmp_path / "plain" / "config.json").read_text())
