"""Serving multi-camera checkpoints: metadata lists the roles; `PolicyClient.act(images={...})` per rig."""
from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from serving.client import PolicyClient
from serving.errors import ServingError
from serving.policies import ModelPolicy
from serving.server import PolicyServer
from vla.model.multi_image import RIG_ROLES, set_image_roles
from vla.model.openvla import OpenVLA, preset_tokenizer
from vla.model.presets import get_preset

SIZE = 56


def _model(rig: str, toy_stats: dict) -> OpenVLA:
    cfg = dataclasses.replace(get_preset("tiny"), image_sizes=(SIZE, SIZE))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = OpenVLA(cfg, preset_tokenizer(), toy_stats).eval()
    roles, vib = RIG_ROLES[rig]
    return set_image_roles(model, roles, vib, 0.01 if vib else 0.0)


@pytest.mark.parametrize("rig", ["third_person", "eye_in_hand", "both", "both-vib"])
def test_act_with_images_by_role_per_rig(rig, toy_stats, random_image):
    model = _model(rig, toy_stats)
    server = PolicyServer(ModelPolicy(model), host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = PolicyClient(server.address, timeout_s=60)
    try:
        roles = list(RIG_ROLES[rig][0])
        meta = client.metadata()
        assert meta["image_roles"] == roles and meta["cameras"] == roles
        images = {r: random_image(i, (64, 64)) for i, r in enumerate(roles)}
        reply = client.act(images=images, instruction="pick up the red block")
        np.testing.assert_allclose(reply.action, model.predict_action(images=images, instruction="pick up the red block"))
        with pytest.raises(ServingError, match="keyed"):
            client.act(images={"secondary": random_image(9, (64, 64))}, instruction="pick")
    finally:
        client.close()
        server.close()
        thread.join(timeout=5)
