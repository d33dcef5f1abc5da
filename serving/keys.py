"""CURVE key pairs for `vla serve --keys DIR` (ZeroMQ's built-in authentication and encryption).

Layout written by `generate_keys(DIR, clients=("robot",))`:
    DIR/server.key, DIR/server.key_secret   the server's pair; copy server.key to each robot computer
    DIR/authorized/robot.key                public keys the server accepts (add or delete files here)
    DIR/robot.key, DIR/robot.key_secret     a client's pair; copy both to that robot computer
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib

import zmq.auth

from serving.errors import KeysError

log = logging.getLogger(__name__)

SERVER_NAME = "server"
AUTHORIZED_DIR = "authorized"


@dataclasses.dataclass(frozen=True)
class ServerKeys:
    """The server's key pair and the folder of client public keys it accepts."""

    public: bytes
    secret: bytes
    authorized_dir: pathlib.Path

    @classmethod
    def load(cls, directory: str | pathlib.Path) -> ServerKeys:
        """Read DIR/server.key_secret and DIR/authorized/ (as written by `vla keys DIR`)."""
        directory = pathlib.Path(directory)
        public, secret = _load_pair(directory / f"{SERVER_NAME}.key_secret")
        authorized = directory / AUTHORIZED_DIR
        if not authorized.is_dir() or not any(authorized.glob("*.key")):
            raise KeysError(f"{authorized} holds no client public keys (*.key); run `vla keys {directory}` "
                            "or copy a client's NAME.key there")
        return cls(public, secret, authorized)


@dataclasses.dataclass(frozen=True)
class ClientKeys:
    """A client's key pair and the server's public key."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def load(cls, directory: str | pathlib.Path, name: str = "client") -> ClientKeys:
        """Read DIR/NAME.key_secret and DIR/server.key."""
        directory = pathlib.Path(directory)
        public, secret = _load_pair(directory / f"{name}.key_secret")
        server_file = directory / f"{SERVER_NAME}.key"
        if not server_file.is_file():
            raise KeysError(f"server public key {server_file} is missing; copy server.key from the key folder "
                            "that `vla serve --keys` uses")
        server_public, _ = zmq.auth.load_certificate(str(server_file))
        return cls(public, secret, server_public)


def _load_pair(secret_file: pathlib.Path) -> tuple[bytes, bytes]:
    if not secret_file.is_file():
        raise KeysError(f"secret key file {secret_file} is missing; generate keys with `vla keys {secret_file.parent}`")
    try:
        public, secret = zmq.auth.load_certificate(str(secret_file))
    except (ValueError, OSError) as e:
        raise KeysError(f"cannot read key file {secret_file}: {e}; regenerate it with `vla keys`") from e
    if secret is None:
        raise KeysError(f"{secret_file} has no secret key; it must be the .key_secret file written by `vla keys`")
    return public, secret


def generate_keys(directory: str | pathlib.Path, clients: tuple[str, ...] = ("client",), force: bool = False) -> pathlib.Path:
    """Write a server pair, one pair per client name, and authorize each client; returns the folder."""
    directory = pathlib.Path(directory)
    if not clients:
        raise KeysError("name at least one client (e.g. --clients robot1)")
    bad = [c for c in clients if not c or c == SERVER_NAME or "/" in c or c.startswith(".")]
    if bad:
        raise KeysError(f"client names {bad} are not usable file names (and '{SERVER_NAME}' is reserved)")
    names = (SERVER_NAME, *clients)
    existing = [str(directory / f"{n}.key_secret") for n in names if (directory / f"{n}.key_secret").exists()]
    if existing and not force:
        raise KeysError(f"keys already exist: {existing}; pass --force to replace them "
                        "(every robot computer then needs the new files)")
    authorized = directory / AUTHORIZED_DIR
    authorized.mkdir(parents=True, exist_ok=True)
    for name in names:
        zmq.auth.create_certificates(str(directory), name)
    for name in clients:
        (authorized / f"{name}.key").write_bytes((directory / f"{name}.key").read_bytes())
    log.info("wrote CURVE keys for server and %s in %s", ", ".join(clients), directory)
    return directory
