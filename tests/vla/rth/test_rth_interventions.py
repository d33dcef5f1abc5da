"""Interventions end to end: a served RT-H model, an OracleIntervener in MuJoCo, RLDS written and read."""
from __future__ import annotations

import copy
import dataclasses
import threading

import numpy as np
import pytest

import vla
from scripts.cli import main as vla_main
from serving.client import PolicyClient
from serving.errors import RequestRejectedError
from serving.policies import ModelPolicy
from serving.server import PolicyServer
from robot.types import Observation
from sim.config import SceneOptions
from sim.registry import get_task
from vla.data.rlds_writer import write_rlds
from vla.data.statistics import compute_statistics
from vla.rth.intervene import KeyboardIntervener, OracleIntervener, RTHPolicy, run_and_record
from vla.rth.motions import MotionSpec
from vla.rth.query import predict_actions_given, predict_motions, rth_info
from vla.rth.errors import CorrectionsError, MotionSpecError
from vla.rth.train import (OVERRIDE, POLICY, MotionEpisode, TrainSettings, check_corrections, learn_corrections,
                           read_motion_episodes)

from rth_fixtures import COLOURS, MOTIONS, TASK, colour_episodes

SIM_SPEC = MotionSpec.absolute([0.005] * 3 + [0.05] * 3 + [0.5])  # the WidowX expert moves 2-3.5 cm a step


@pytest.fixture
def served(rth_model):
    server = PolicyServer(ModelPolicy(rth_model, name="rth-tiny"), host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.close()
    thread.join(timeout=10)


def test_served_override_reaches_the_action_query(rth_model, served):
    image = COLOURS[0][None, None].repeat(32, 0).repeat(32, 1)
    with PolicyClient(served.address, timeout_s=60) as client:
        assert client.metadata()["rth"]["checkpoint_id"] == rth_info(rth_model).checkpoint_id
        plain = client.act(images={"primary": image}, instruction=TASK)
        assert plain.motion == MOTIONS[0] and plain.motion_source == "policy"
        for motion in ("move arm up", "move arm left and close gripper"):
            reply = client.act(images={"primary": image}, instruction=TASK, options={"motion": motion})
            assert reply.motion == motion and reply.motion_source == "override"
            np.testing.assert_allclose(reply.action, predict_actions_given(rth_model, [image], [TASK], [motion])[0],
                                       rtol=1e-6)
        with pytest.raises(RequestRejectedError, match="non-empty"):
            client.act(images={"primary": image}, instruction=TASK, options={"motion": " "})


class _ScriptedIntervener:
    """Overrides at the listed steps with the given motion (a person's typed corrections, scripted)."""

    def __init__(self, at: dict[int, str]) -> None:
        self.at, self.step = at, 0

    def reset(self) -> None:
        self.step = 0

    def correct(self, obs, instruction, predicted_motion):
        self.step += 1
        return self.at.get(self.step - 1)


@pytest.mark.parametrize("overrides", [{3: "move arm up"}, {0: "move arm left", 3: "move arm up"}])
def test_served_policy_looks_ahead_as_the_in_process_one(rth_model, served, overrides):
    """Through a server, step t acts on the motion predicted at t - 1, as in process (same actions and
    motions), in one request per step; an override of the first step's motion costs one more."""
    frames = [COLOURS[k][None, None].repeat(32, 0).repeat(32, 1) for k in (0, 1, 1, 2, 0)]
    observations = [Observation({"primary": f}, None, float(t)) for t, f in enumerate(frames)]
    runs = []
    with PolicyClient(served.address, timeout_s=60) as client:
        assert client.metadata()["rth"]["lookahead"] == 1
        for kind in ("model", "client"):
            where = {"model": rth_model} if kind == "model" else {"client": client}
            policy = RTHPolicy(**where, intervener=_ScriptedIntervener(overrides))
            policy.reset()
            before = served.stats.requests
            runs.append([policy.act(o, TASK) for o in observations])
    assert served.stats.requests - before == len(observations) + (0 in overrides)
    local, remote = runs
    assert [s.motion for s in remote] == [s.motion for s in local]
    assert [s.motion_source for s in remote] == [s.motion_source for s in local]
    np.testing.assert_allclose(np.stack([s.action for s in remote]), np.stack([s.action for s in local]), rtol=1e-6)
    assert [s.motion_source for s in local] == [OVERRIDE if t in overrides else POLICY for t in range(5)]
    assert local[3].motion == "move arm up"
    if 0 not in overrides:  # look-ahead: step 2 (green) acts on its green predecessor's plan, step 4 (red) on blue's
        assert local[0].motion == MOTIONS[0] and local[2].motion == MOTIONS[1]
        assert local[4].motion == MOTIONS[2]
    else:
        assert local[0].motion == "move arm left"


def test_served_rth_options_refuse_contradictions(rth_model, served):
    image = COLOURS[0][None, None].repeat(32, 0).repeat(32, 1)
    with PolicyClient(served.address, timeout_s=60) as client:
        with pytest.raises(RequestRejectedError, match="send one"):
            client.act(images={"primary": image}, instruction=TASK,
                       options={"motion": "move arm up", "planned_motion": "move arm left"})
        with pytest.raises(RequestRejectedError, match="true or false"):
            client.act(images={"primary": image}, instruction=TASK, options={"lookahead": 1})
        with pytest.raises(RequestRejectedError, match="planned_motion"):
            client.act(images={"primary": image}, instruction=TASK, options={"planned_motion": ""})
        reply = client.act(images={"primary": image}, instruction=TASK, options={"lookahead": True})
        assert reply.motion == MOTIONS[0] and reply.next_motion == MOTIONS[0]  # red now, red ahead


def test_motion_option_refused_by_a_flat_checkpoint(rth_model):
    flat = ModelPolicy(vla.OpenVLA.from_preset("tiny", norm_stats=rth_model.norm_stats, seed=1))
    from serving.protocol import ActRequest

    request = ActRequest({"primary": np.zeros((32, 32, 3), np.uint8)}, TASK, options={"motion": "move arm up"})
    with pytest.raises(Exception, match="needs an RT-H checkpoint"):
        flat.check(request)


@pytest.mark.slow
def test_oracle_episode_in_mujoco_through_a_server_is_recorded(rth_model, served, tmp_path):
    task = get_task("widowx-pick-block")
    scene = task.make(seed=3, options=SceneOptions(rig="third_person", image_size=64))
    try:
        expert = task.expert(scene, "expert", seed=3)
        oracle = OracleIntervener(expert.act, SIM_SPEC, patience=2)
        with PolicyClient(served.address, timeout_s=60) as client:
            policy = RTHPolicy(client=client, intervener=oracle)
            res, episode = run_and_record(scene, policy, TASK, max_steps=8, seed=3)
    finally:
        scene.close()
    sources = episode.extras["motion_source"]
    assert len(sources) == res.steps == 8 and oracle.interventions >= 1
    assert sources[0] == POLICY  # patience 2: a first disagreement is not yet corrected
    assert OVERRIDE in sources
    write_rlds(tmp_path, "corrections", [episode])
    stats = compute_statistics("corrections", tmp_path)  # what `vla data stats` prints
    assert stats["num_transitions"] == 8
    (read,) = read_motion_episodes("corrections", tmp_path)
    assert list(read.sources) == sources and list(read.motions) == episode.extras["language_motion"]
    check_corrections(rth_info(rth_model), [read])  # same checkpoint, a task it knows

    # `vla rth learn-corrections`: motion query only, a new RT-H checkpoint
    rth_model.save_pretrained(tmp_path / "ckpt" / "base")
    args = ["rth", "learn-corrections", "--base", str(tmp_path / "ckpt" / "base"), "--corrections", str(tmp_path),
            "--out", str(tmp_path / "ckpt" / "corrected"), "--steps", "3", "--batch-size", "4"]
    assert vla_main(args) == 0
    # --replay: the motion rows also draw from labelled demos (here the same episode, written as a demo set)
    write_rlds(tmp_path / "demos", "demos", [episode])
    assert vla_main([*args[:6], "--out", str(tmp_path / "ckpt" / "replayed"), "--replay", "demos",
                     "--replay-data-dir", str(tmp_path / "demos"), "--steps", "2", "--batch-size", "4"]) == 0
    assert rth_info(vla.OpenVLA.from_pretrained(tmp_path / "ckpt" / "replayed")).tasks == rth_info(rth_model).tasks
    corrected = vla.OpenVLA.from_pretrained(tmp_path / "ckpt" / "corrected")
    info = rth_info(corrected)
    assert info.checkpoint_id != rth_info(rth_model).checkpoint_id and info.tasks == rth_info(rth_model).tasks
    with pytest.raises(CorrectionsError, match="recorded with checkpoint"):  # it did not run these episodes
        learn_corrections(corrected, [read], TrainSettings(steps=1))
    with pytest.raises(CorrectionsError, match="not trained on"):
        check_corrections(rth_info(rth_model), [dataclasses.replace(read, instruction="open the drawer")])


def test_keyboard_hotkeys_hold_until_cleared(tmp_path):
    import os

    r, w = os.pipe()
    with os.fdopen(r) as reader, os.fdopen(w, "w", buffering=1) as writer:
        kb = KeyboardIntervener(reader)
        assert kb.correct(None, TASK, "stop") is None
        writer.write("a\n")
        assert kb.correct(None, TASK, "stop") == "move arm left"
        assert kb.correct(None, TASK, "stop") == "move arm left"  # held
        writer.write("tilt arm up and open gripper\n")
        assert kb.correct(None, TASK, "stop") == "tilt arm up and open gripper"  # any phrase goes
        writer.write("\n")
        assert kb.correct(None, TASK, "stop") is None


def test_keyboard_keys_from_a_terminal_hotkeys_at_once_phrases_on_enter():
    kb = KeyboardIntervener(stream=None)  # `vla robot run` feeds the terminal's keys
    kb.feed("r")
    assert kb.correct(None, TASK, "stop") == "move arm up"  # no Enter needed
    kb.feed("tilt arm u")
    assert kb.correct(None, TASK, "stop") == "move arm up"  # a phrase waits for Enter
    kb.feed("p\n")
    assert kb.correct(None, TASK, "stop") == "tilt arm up"
    kb.feed("/rotate arm lefx\x7ft\r")  # "/": a phrase starting with a hotkey letter; backspace erases
    assert kb.correct(None, TASK, "stop") == "rotate arm left"
    kb.feed("\n")
    assert kb.correct(None, TASK, "stop") is None


def test_robot_intervention_refuses_unknown_names_and_flat_servers(rth_model, served):
    from serving.policies import NoopPolicy

    from vla.rth.errors import IntervenerError, MotionQueryError
    from vla.rth.intervene import robot_intervention

    with PolicyClient(served.address, timeout_s=60) as client:
        with pytest.raises(IntervenerError, match="did you mean 'keyboard'"):
            robot_intervention("keybaord", client, None, " qe")
        with pytest.raises(IntervenerError, match=r"hotkeys \['r'\].*e-stop keys"):
            robot_intervention("keyboard", client, None, "r")
        intervention = robot_intervention("keyboard", client, None, " qe")
        assert intervention.metadata["rth_checkpoint"] == rth_info(rth_model).checkpoint_id
    flat = PolicyServer(NoopPolicy(7), host="127.0.0.1", port=0)
    thread = threading.Thread(target=flat.serve_forever, daemon=True)
    thread.start()
    try:
        with PolicyClient(flat.address, timeout_s=60) as client, pytest.raises(MotionQueryError, match="RT-H"):
            robot_intervention("keyboard", client, None, " qe")
    finally:
        flat.close()
        thread.join(timeout=10)


def test_conflict_rule_overrides_wrong_directions_and_missed_gripper_changes_only():
    moves = iter(np.array(a, float) for a in ([0.02, 0, 0, 0, 0, 0, 1],) * 8)  # the expert: forward, gripper open

    def expert(obs, instruction):
        return next(moves)

    oracle = OracleIntervener(expert, SIM_SPEC, patience=1, rule="conflict")
    assert oracle.correct(None, TASK, "move arm forward and move arm up") is None  # an extra axis: not a conflict
    assert oracle.correct(None, TASK, "stop") is None  # too small to matter
    assert oracle.correct(None, TASK, "move arm backward") == "move arm forward"  # the opposite way
    strict = OracleIntervener(expert, SIM_SPEC, patience=1)
    assert strict.correct(None, TASK, "move arm forward and move arm up") == "move arm forward"
    with pytest.raises(ValueError, match="rule"):
        OracleIntervener(expert, SIM_SPEC, rule="sometimes")


def test_learning_corrections_keeps_the_action_query(rth_model):
    image = COLOURS[0][None, None].repeat(32, 0).repeat(32, 1)
    before = predict_actions_given(rth_model, [image], [TASK], [MOTIONS[0]])[0]
    ep = MotionEpisode(instruction=TASK, images=np.stack([image] * 4), actions=np.tile(before, (4, 1)),
                       motions=("move arm down",) * 4, sources=(OVERRIDE,) * 4,
                       checkpoint_id=rth_info(rth_model).checkpoint_id)
    anchored, loose = copy.deepcopy(rth_model), copy.deepcopy(rth_model)
    settings = TrainSettings(steps=40, batch_size=6, lr=5e-3, seed=0)
    learn_corrections(anchored, [ep], settings)
    learn_corrections(loose, [ep], settings, anchor=False)
    for model in (anchored, loose):
        assert predict_motions(model, [image], [TASK])[0] == "move arm down"  # the correction is learnt
    drift = {name: np.abs(predict_actions_given(m, [image], [TASK], [MOTIONS[0]])[0] - before).max()
             for name, m in (("anchored", anchored), ("loose", loose))}
    assert drift["anchored"] <= drift["loose"]


def test_replaying_demos_learns_the_correction_and_keeps_the_rest(rth_model):
    images = [COLOURS[k][None, None].repeat(32, 0).repeat(32, 1) for k in range(3)]
    ep = MotionEpisode(instruction=TASK, images=np.stack([images[0]] * 4), actions=np.zeros((4, 7), np.float32),
                       motions=("move arm down",) * 4, sources=(OVERRIDE,) * 4,
                       checkpoint_id=rth_info(rth_model).checkpoint_id)
    model = copy.deepcopy(rth_model)
    learn_corrections(model, [ep], TrainSettings(steps=40, batch_size=8, lr=5e-3, seed=0), weight=1.0,
                      replay=colour_episodes(6), replay_share=0.5)
    assert predict_motions(model, images, [TASK] * 3) == ["move arm down", *MOTIONS[1:]]
    settings = TrainSettings(steps=1)
    with pytest.raises(CorrectionsError, match="--replay DATASET"):
        learn_corrections(copy.deepcopy(rth_model), [ep], settings, replay_share=0.5)
    with pytest.raises(MotionSpecError, match="replay-share"):
        learn_corrections(copy.deepcopy(rth_model), [ep], settings, replay=colour_episodes(3), replay_share=1.0)
    other = [dataclasses.replace(e, instruction="open the drawer") for e in colour_episodes(3)]
    with pytest.raises(CorrectionsError, match="not trained on"):
        learn_corrections(copy.deepcopy(rth_model), [ep], settings, replay=other, replay_share=0.5)
