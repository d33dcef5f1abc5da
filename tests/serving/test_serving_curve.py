"""CURVE: `vla keys` layout; an authorized client is served, others are refused."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from serving.client import PolicyClient
from serving.errors import AuthenticationError, KeysError
from serving.keys import ClientKeys, ServerKeys, generate_keys


def test_key_layout_and_overwrite_protection(tmp_path: pathlib.Path) -> None:
    generate_keys(tmp_path, clients=("robot1", "robot2"))
    assert {p.name for p in (tmp_path / "authorized").iterdir()} == {"robot1.key", "robot2.key"}
    server, client = ServerKeys.load(tmp_path), ClientKeys.load(tmp_path, "robot2")
    assert client.server_public == server.public and len(client.secret) == 40
    with pytest.raises(KeysError, match="--force"):
        generate_keys(tmp_path, clients=("robot1",))
    with pytest.raises(KeysError, match="robot3.key_secret is missing"):
        ClientKeys.load(tmp_path, "robot3")
    with pytest.raises(KeysError, match="reserved"):
        generate_keys(tmp_path / "other", clients=("server",))


def test_authorized_client_is_served_and_others_refused(start_server, tmp_path: pathlib.Path) -> None:
    generate_keys(tmp_path / "keys", clients=("robot",))
    generate_keys(tmp_path / "stranger", clients=("robot",))  # same names, keys the server never saw
    server = start_server(keys=tmp_path / "keys")
    image = np.zeros((8, 8, 3), np.uint8)
    with PolicyClient(server.address, timeout_s=5, keys=tmp_path / "keys", key_name="robot") as client:
        assert client.metadata()["authenticated"] is True
        assert client.act(images={"a": image}, instruction="x").action.shape == (7,)
    # a stranger's key pair with the right server key: the ZAP handler refuses it
    stranger = ClientKeys.load(tmp_path / "stranger", "robot")
    stranger = ClientKeys(stranger.public, stranger.secret, ServerKeys.load(tmp_path / "keys").public)
    with PolicyClient(server.address, timeout_s=0.5, keys=stranger) as client:
        with pytest.raises(AuthenticationError, match="refused"):
            client.act(images={"a": image}, instruction="x")
    with PolicyClient(server.address, timeout_s=0.5) as client:  # no keys at all
        with pytest.raises(AuthenticationError, match="handshake failed"):
            client.act(images={"a": image}, instruction="x")
