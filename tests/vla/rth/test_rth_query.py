"""The two-query RT-H model: prompts, training, save/load, sequential vs look-ahead, refusals."""
from __future__ import annotations

import numpy as np
import pytest

import vla
from vla.rth.errors import MotionError, MotionQueryError
from vla.rth.query import (ACTION_PROMPT, MOTION_PROMPT, Sample, encode_samples, predict_action,
                           predict_actions_given, predict_lookahead, predict_motions, rth_info)

from rth_fixtures import COLOURS, MOTIONS, TASK, colour_episodes


def test_prompts_are_exactly_rth_s():
    assert MOTION_PROMPT.format(task="x") == "In: What motion should the robot do to x?\nOut:"
    assert ACTION_PROMPT.format(task="x", motion="m") == "In: What action should the robot take to x with motion m?\nOut:"


def test_training_rows_label_only_the_answer(rth_model):
    tok = rth_model.processor.tokenizer
    batch = encode_samples(rth_model.processor, [Sample(TASK, "move arm up"),
                                                 Sample(TASK, "move arm up", np.zeros(7))])
    labels = batch["labels"]
    motion_ids = labels[0][labels[0] != -100].tolist()
    assert tok.tokenizer.decode(motion_ids[:-1]) == "move arm up" and motion_ids[-1] == tok.eos_id
    action_ids = labels[1][labels[1] != -100].tolist()
    assert len(action_ids) == 8 and rth_model.action_tokenizer.is_action_token(np.array(action_ids[:7])).all()


def test_trained_model_answers_both_queries(rth_model):
    images = [e.images[0] for e in colour_episodes(3, seed=5)]
    assert predict_motions(rth_model, images, [TASK] * 3) == list(MOTIONS)
    action, motion = predict_action(rth_model, images[1], TASK)  # motion=None: the motion query runs first
    assert motion == MOTIONS[1]
    assert action.shape == (7,) and np.isfinite(action).all()


def test_save_load_round_trip_keeps_rth(rth_model, tmp_path):
    rth_model.save_pretrained(tmp_path / "ckpt")
    loaded = vla.OpenVLA.from_pretrained(tmp_path / "ckpt")
    assert rth_info(loaded) == rth_info(rth_model) and set(MOTIONS) <= set(rth_info(loaded).vocabulary)
    image = COLOURS[2][None, None].repeat(32, 0).repeat(32, 1)
    for motion in (None, "move arm left"):
        a1, m1 = predict_action(rth_model, image, TASK, motion)
        a2, m2 = predict_action(loaded, image, TASK, motion)
        assert m1 == m2
        np.testing.assert_array_equal(a1, a2)


def test_lookahead_equals_sequential_for_the_same_motion(rth_model):
    images = [e.images[1] for e in colour_episodes(3, seed=9)]
    previous = ["move arm forward", "stop", "move arm left and close gripper and move arm up"]
    actions, next_motions = predict_lookahead(rth_model, images, [TASK] * 3, previous)
    np.testing.assert_array_equal(actions, predict_actions_given(rth_model, images, [TASK] * 3, previous))
    assert next_motions == predict_motions(rth_model, images, [TASK] * 3)


def test_motion_changes_the_action_query_input(rth_model):
    image = COLOURS[0][None, None].repeat(32, 0).repeat(32, 1)
    outs = {tuple(predict_action(rth_model, image, TASK, m)[0]) for m in MOTIONS}
    assert len(outs) >= 2  # the motion words reach the action query


def test_refusals(rth_model, caplog):
    flat = vla.OpenVLA.from_preset("tiny", norm_stats=rth_model.norm_stats, seed=1)
    image = COLOURS[0][None, None].repeat(32, 0).repeat(32, 1)
    with pytest.raises(MotionQueryError, match="--rth"):
        predict_action(flat, image, TASK, "move arm up")
    with pytest.raises(MotionQueryError):
        predict_motions(flat, [image], [TASK])
    with pytest.raises(MotionError, match="empty"):
        predict_action(rth_model, image, TASK, "   ")
    with caplog.at_level("INFO", logger="vla.rth.query"):
        predict_action(rth_model, image, TASK, "wave hello")  # out of vocabulary: followed, logged
    assert "out of the checkpoint's training vocabulary" in caplog.text


def test_model_methods_delegate_to_the_two_queries(rth_model):
    images = [e.images[0] for e in colour_episodes(3, seed=7)]
    assert rth_model.predict_motion(images[2], TASK) == MOTIONS[2]
    assert rth_model.predict_motions(images, [TASK] * 3) == list(MOTIONS)
    np.testing.assert_array_equal(rth_model.predict_action(images[0], TASK, motion="move arm up"),
                                  predict_actions_given(rth_model, images[:1], [TASK], ["move arm up"])[0])
    np.testing.assert_array_equal(rth_model.predict_action(images[0], TASK),  # None: motion query first
                                  predict_actions_given(rth_model, images[:1], [TASK], [MOTIONS[0]])[0])
    actions, nxt = rth_model.predict_lookahead(images, [TASK] * 3, ["stop"] * 3)
    assert actions.shape == (3, 7) and nxt == list(MOTIONS)
    flat = vla.OpenVLA.from_preset("tiny", norm_stats=rth_model.norm_stats, seed=1)
    np.testing.assert_array_equal(flat.predict_action(images[0], TASK), flat.predict_actions(images[:1], [TASK])[0])
    with pytest.raises(MotionQueryError, match="RT-H checkpoint"):
        flat.predict_action(images[0], TASK, motion="move arm up")
    with pytest.raises(MotionQueryError):
        flat.predict_motion(images[0], TASK)


def test_out_of_vocabulary_motion_is_followed_and_logged_once(rth_model, caplog):
    image = COLOURS[0][None, None].repeat(32, 0).repeat(32, 1)
    with caplog.at_level("INFO", logger="vla.rth.query"):
        for _ in range(3):  # a person holding one new phrase for three steps
            action, motion = predict_action(rth_model, image, TASK, "wiggle toward the bowl")
            assert motion == "wiggle toward the bowl" and np.isfinite(action).all()
    assert sum("wiggle toward the bowl" in r.getMessage() for r in caplog.records) == 1


def test_loading_an_rth_checkpoint_warns_about_nothing(rth_model, tmp_path, caplog):
    rth_model.save_pretrained(tmp_path / "ckpt")
    with caplog.at_level("WARNING", logger="vla.model.config"):
        vla.OpenVLA.from_pretrained(tmp_path / "ckpt")
    assert not [r for r in caplog.records if "not used" in r.getMessage()]  # the rth table is RT-H's, not unknown


def test_rth_policy_acts_on_the_motion_predicted_a_step_earlier(rth_model):
    from robot import Observation
    from vla.rth.intervene import RTHPolicy

    assert rth_info(rth_model).lookahead == 1  # the motion query was trained on the next step's motion
    first, second = (COLOURS[i][None, None].repeat(32, 0).repeat(32, 1) for i in (0, 1))
    policy = RTHPolicy(rth_model)
    policy.reset()
    steps = [policy.act(Observation({"primary": img}, None, 0.0), TASK) for img in (first, second, second)]
    assert [s.motion for s in steps] == [MOTIONS[0], MOTIONS[0], MOTIONS[1]]  # step t acts on query(t - 1)
    expected = predict_actions_given(rth_model, [second], [TASK], [MOTIONS[0]])[0]
    np.testing.assert_allclose(steps[1].action, expected.astype(np.float32))
    policy.reset()  # a new episode starts from its own first image
    assert policy.act(Observation({"primary": second}, None, 0.0), TASK).motion == MOTIONS[1]
