"""`vla predict` and `vla info` through their main(argv)."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from scripts import info as info_verb
from scripts import predict as predict_verb


def test_predict_prints_the_reference_action(capsys, reference_dir, reference_cases):
    case = reference_cases[0]
    argv = [str(reference_dir / "checkpoint"), "--image", str(reference_dir / case["image"]),
            "--instruction", case["instruction"], "--unnorm-key", case["unnorm_key"]]
    assert predict_verb.main(argv) == 0
    np.testing.assert_allclose(json.loads(capsys.readouterr().out), case["action"], atol=1e-5)


def test_predict_errors_are_messages(capsys, tmp_path, reference_dir):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    assert predict_verb.main([str(tmp_path), "--image", str(tmp_path / "x.png"), "--instruction", "go"]) == 2
    assert "not an OpenVLA checkpoint folder" in capsys.readouterr().err
    argv = [str(reference_dir / "checkpoint"), "--image", str(tmp_path / "missing.png"), "--instruction", "go"]
    assert predict_verb.main(argv) == 2
    assert "does not exist" in capsys.readouterr().err


def test_info_reports_presets_and_quantization(capsys):
    assert info_verb.main(["--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    sizes = {p["name"]: p["parameters"] for p in info["presets"]}
    assert 7.4e9 < sizes["openvla-7b"] < 7.7e9 and sizes["tiny"] < 3e6
    assert info["versions"]["transformers"].startswith("5.")
    assert set(info["quantization"]) >= {"8bit on cpu", "4bit on cpu"}
