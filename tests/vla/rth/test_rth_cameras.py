"""RT-H on a multi-camera checkpoint (`vla finetune --rth --images primary,wrist`): queries, policy,
server, training and corrections read {role: image}, as the flat path does."""
from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

from robot.types import Observation
from serving.client import PolicyClient
from serving.policies import ModelPolicy
from serving.server import PolicyServer
from vla.data.rlds_writer import Episode, write_rlds
from vla.errors import ImageError
from vla.model.multi_image import set_image_roles
from vla.rth.errors import CorrectionsError
from vla.rth.intervene import RTHPolicy
from vla.rth.label import MOTION_FIELD
from vla.rth.query import (Sample, encode_samples, predict_actions_given, predict_lookahead, predict_motions,
                           rth_info, weighted_loss)
from vla.rth.train import MotionEpisode, TrainSettings, read_motion_episodes, train_policy

from rth_fixtures import COLOURS, MOTIONS, TASK, colour_episodes

ROLES = ("primary", "wrist")


def _frame(k: int) -> np.ndarray:
    return COLOURS[k][None, None].repeat(32, 0).repeat(32, 1)


@pytest.fixture(scope="module")
def two_camera(rth_model):
    """The trained RT-H model given a second camera (the primary stream keeps what it learnt)."""
    return set_image_roles(copy.deepcopy(rth_model), ROLES, seed=0)


def test_queries_take_images_by_role(two_camera):
    obs = [{"primary": _frame(k), "wrist": _frame((k + 1) % 3)} for k in range(3)]
    previous = list(MOTIONS)
    actions, upcoming = predict_lookahead(two_camera, obs, [TASK] * 3, previous)
    np.testing.assert_array_equal(actions, predict_actions_given(two_camera, obs, [TASK] * 3, previous))
    assert upcoming == predict_motions(two_camera, obs, [TASK] * 3)
    one = two_camera.predict_action(images=obs[1], instruction=TASK, motion=previous[1])
    np.testing.assert_array_equal(one, actions[1])
    with pytest.raises(ImageError, match="one per role"):
        predict_motions(two_camera, [_frame(0)], [TASK])
    with pytest.raises(ImageError, match=r"missing \['wrist'\]"):
        two_camera.predict_action(images={"primary": _frame(0)}, instruction=TASK)


def test_policy_in_process_and_served_agree(two_camera):
    observations = [Observation({"primary": _frame(k), "wrist": _frame(2 - k)}, None, float(t))
                    for t, k in enumerate((0, 1, 1, 2))]
    server = PolicyServer(ModelPolicy(two_camera, name="rth-two-camera"), host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with PolicyClient(server.address, timeout_s=60) as client:
            assert client.metadata()["image_roles"] == list(ROLES)
            runs = []
            for where in ({"model": two_camera}, {"client": client}):
                policy = RTHPolicy(**where)
                policy.reset()
                runs.append([policy.act(o, TASK) for o in observations])
    finally:
        server.close()
        thread.join(timeout=10)
    local, remote = runs
    assert [s.motion for s in remote] == [s.motion for s in local]
    np.testing.assert_allclose(np.stack([s.action for s in remote]), np.stack([s.action for s in local]), rtol=1e-6)
    policy = RTHPolicy(model=two_camera)
    with pytest.raises(ImageError, match=r"missing \['wrist'\]"):
        policy.act(Observation({"primary": _frame(0)}, None, 0.0), TASK)


def test_training_on_two_cameras(two_camera, tmp_path):
    episodes = [MotionEpisode({"primary": e.images, "wrist": e.images[:, ::-1]}, e.actions, e.instruction, e.motions)
                for e in colour_episodes(3)]
    assert set(episodes[0].frame(1)) == set(ROLES)
    model = copy.deepcopy(two_camera)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "role_tokens" in n}
    losses = train_policy(model, episodes, TrainSettings(steps=3, batch_size=4, lr=1e-3, mix=0.5, seed=0))
    assert len(losses) == 3 and np.isfinite(losses).all()
    assert any(not np.array_equal(before[n].numpy(), p.detach().numpy())
               for n, p in model.named_parameters() if n in before)  # the role embeddings were trained
    assert rth_info(model) is not None

    # recorded episodes (both cameras, as `vla robot run` writes them) read back per role
    data = [Episode({"primary": e.images["primary"], "wrist": e.images["wrist"]}, np.zeros((4, 3), np.float32),
                    e.actions, TASK, extras={MOTION_FIELD: list(e.motions)}) for e in episodes]
    write_rlds(tmp_path, "two_cams_rth", data, image_encoding="png")
    (read, *_) = read_motion_episodes("two_cams_rth", tmp_path, ROLES)
    np.testing.assert_array_equal(read.images["wrist"], episodes[0].images["wrist"])
    with pytest.raises(CorrectionsError, match=r"no \['top'\] camera.*image_primary"):
        read_motion_episodes("two_cams_rth", tmp_path, ("primary", "top"))


def test_rth_training_loss_carries_the_bottleneck_term(two_camera):
    """`vla rth train` / `learn-corrections` add beta * KL for a VIB checkpoint, as `vla finetune --rth`."""
    model = set_image_roles(copy.deepcopy(two_camera), ROLES, ("primary",), 0.1).eval()
    batch = encode_samples(model.processor, [Sample(TASK, MOTIONS[0]), Sample(TASK, MOTIONS[0], np.zeros(7))])
    pixels = torch.cat([model.processor.process_images([_frame(0)] * 2)] * 2, dim=1)
    with torch.no_grad():
        with_kl = float(weighted_loss(model, pixels, batch))
        kl = float(model.embed_images_with_kl(pixels)[1])
        set_image_roles(model, ROLES, ("primary",), 0.0)
        without = float(weighted_loss(model, pixels, batch))
    assert kl > 0 and with_kl == pytest.approx(without + 0.1 * kl, rel=1e-5)
