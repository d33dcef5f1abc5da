"""The acceptance test: our loader reproduces what the original OpenVLA code produced."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


def _cases(reference_cases, reference_dir):
    for case in reference_cases:
        yield case, Image.open(reference_dir / case["image"])


def test_pixel_values_match(reference_model, reference_cases, reference_dir):
    for case, image in _cases(reference_cases, reference_dir):
        ours = reference_model.processor.process_images([image]).numpy()
        expected = np.load(reference_dir / case["pixel_values"])
        assert ours.shape == expected.shape == (1, 6, 224, 224)
        np.testing.assert_allclose(ours, expected, atol=1e-6, rtol=0, err_msg=case["name"])


def test_input_ids_exact(reference_model, reference_cases):
    for case in reference_cases:
        assert reference_model.processor.prompt_ids(case["instruction"]) == case["input_ids"], case["name"]


def test_tokens_logits_and_actions(reference_model, reference_cases, reference_dir):
    for case, image in _cases(reference_cases, reference_dir):
        pixel_values = reference_model.processor.process_images([image])
        result = reference_model.decode_actions(pixel_values, [case["instruction"]], n_tokens=7)
        assert result.token_ids[0].tolist() == case["action_token_ids"], case["name"]
        logits = np.load(reference_dir / case["first_step_logits"])
        assert result.first_logits.shape == (1, logits.shape[0])
        np.testing.assert_allclose(result.first_logits[0].numpy(), logits, atol=1e-4, rtol=0, err_msg=case["name"])
        assert int(result.first_logits[0].argmax()) == case["first_step_argmax"]
        action = reference_model.predict_action(image, case["instruction"], unnorm_key=case["unnorm_key"])
        assert action.shape == (7,)
        np.testing.assert_allclose(action, case["action"], atol=1e-5, rtol=0, err_msg=case["name"])


def test_batched_equals_one_by_one(reference_model, reference_cases, reference_dir):
    cases = list(_cases(reference_cases, reference_dir))
    images = [np.asarray(image.convert("RGB")) for _, image in cases]
    instructions = [case["instruction"] for case, _ in cases]
    pixel_values = reference_model.processor.process_images(images)
    batched = reference_model.decode_actions(pixel_values, instructions, n_tokens=7)
    for i, (case, _) in enumerate(cases):
        assert batched.token_ids[i].tolist() == case["action_token_ids"], case["name"]
        np.testing.assert_allclose(batched.first_logits[i].numpy(), np.load(reference_dir / case["first_step_logits"]),
                                   atol=1e-4, rtol=0)
    # one statistics key per call: the bridge cases together
    bridge = [i for i, (case, _) in enumerate(cases) if case["unnorm_key"] == "bridge_orig"]
    actions = reference_model.predict_actions([images[i] for i in bridge], [instructions[i] for i in bridge],
                                              unnorm_key="bridge_orig")
    np.testing.assert_allclose(actions, [cases[i][0]["action"] for i in bridge], atol=1e-5, rtol=0)


def test_image_changes_logits(reference_model, reference_cases, reference_dir):
    """Guard against the known failure where the image is silently ignored."""
    c1, c3 = (next(c for c in reference_cases if c["name"].startswith(p)) for p in ("c1_", "c3_"))
    assert c1["instruction"] == c3["instruction"]
    logits = []
    for case in (c1, c3):
        pv = reference_model.processor.process_images([Image.open(reference_dir / case["image"])])
        logits.append(reference_model.decode_actions(pv, [case["instruction"]], n_tokens=1).first_logits[0])
    assert float((logits[0] - logits[1]).abs().max()) > 0.1
    a1 = reference_model.predict_action(Image.open(reference_dir / c1["image"]), c1["instruction"], "bridge_orig")
    a3 = reference_model.predict_action(Image.open(reference_dir / c3["image"]), c3["instruction"], "bridge_orig")
    assert not np.allclose(a1, a3)


def test_tiny_model_sees_images(tiny_model, random_image):
    pv = tiny_model.processor.process_images([random_image(1), random_image(2)])
    logits = tiny_model.decode_actions(pv, ["pick it up"] * 2, n_tokens=1).first_logits
    assert float((logits[0] - logits[1]).abs().max()) > 1e-4


@pytest.mark.parametrize("unnorm_key", [None])
def test_reference_needs_key_among_several(reference_model, reference_cases, reference_dir, unnorm_key):
    from vla.errors import UnknownUnnormKeyError
    case, image = next(_cases(reference_cases, reference_dir))
    with pytest.raises(UnknownUnnormKeyError, match="bridge_orig"):
        reference_model.predict_action(image, case["instruction"], unnorm_key=unnorm_key)
