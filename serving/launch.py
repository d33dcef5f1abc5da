"""`vla serve`: the settings (a frozen dataclass the CLI is generated from) and the one call it makes."""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable, Literal, Optional

import tyro

from serving.errors import ServerConfigError
from serving.policies import NoopPolicy, ServedPolicy, load_policy
from serving.protocol import RequestLimits
from serving.server import PolicyServer, ServerOptions


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Serve a checkpoint (or zero actions with --noop) over ZeroMQ."""

    checkpoint: tyro.conf.Positional[Optional[pathlib.Path]] = None  # checkpoint folder to serve
    noop: bool = False  # serve zero actions with no model: test robot wiring, measure transport
    action_dim: int = 7  # with --noop: length of the zero action
    host: str = "127.0.0.1"  # interface to bind; 0.0.0.0 exposes the server to the network
    port: int = 5555  # 0: the OS picks a free port (printed on start)
    quantization: Optional[Literal["8bit", "4bit"]] = None  # bitsandbytes quantization (GPU)
    unnorm_key: Optional[str] = None  # dataset statistics used when a request names none
    keys: Optional[pathlib.Path] = None  # folder from `vla keys`: only clients with authorized keys get in
    max_batch: int = 16  # requests per batched model call
    batch_window_ms: float = 0.0  # extra wait for a fuller batch; 0 batches only what is already queued
    max_queue: int = 256  # queued requests beyond this get an Overloaded reply
    max_message_mb: float = 64.0  # largest request accepted
    max_image_side: int = 4096  # largest image height or width accepted, pixels
    vgps: Optional[pathlib.Path] = None  # V-GPS Q-function folder: re-rank K sampled actions per request
    vgps_k: int = 10  # with --vgps: candidates sampled per request
    vgps_beta: float = 0.0  # with --vgps: 0 takes the argmax of Q, > 0 samples softmax(Q / beta)
    vgps_temperature: float = 1.0  # with --vgps: sampling temperature of the candidates
    vgps_seed: int = 0  # with --vgps: seed of the sampling and of the softmax draws


def make_policy(config: ServeConfig) -> ServedPolicy:
    """The policy `config` names: a `NoopPolicy`, or a `ModelPolicy` over the checkpoint."""
    if config.noop == (config.checkpoint is not None):
        raise ServerConfigError("give either a CHECKPOINT folder or --noop (zero actions, no model), not both or neither")
    if config.noop:
        if config.vgps is not None:
            raise ServerConfigError("--vgps re-ranks a model's samples; it needs a CHECKPOINT, not --noop")
        return NoopPolicy(config.action_dim)
    policy = load_policy(config.checkpoint, quantization=config.quantization, unnorm_key=config.unnorm_key)
    if config.vgps is None:
        return policy
    from serving.vgps_policy import load_vgps_policy

    return load_vgps_policy(policy, config.vgps, config.vgps_k, config.vgps_beta, config.vgps_temperature,
                            config.vgps_seed)


def make_server(config: ServeConfig) -> PolicyServer:
    """A bound `PolicyServer` for `config` (not yet serving)."""
    limits = RequestLimits(max_message_bytes=int(config.max_message_mb * 2**20), max_image_side=config.max_image_side)
    options = ServerOptions(limits=limits, max_batch=config.max_batch, max_queue=config.max_queue,
                            batch_window_s=config.batch_window_ms / 1000)
    return PolicyServer(make_policy(config), host=config.host, port=config.port, options=options, keys=config.keys)


def serve(config: ServeConfig, on_ready: Callable[[PolicyServer], None] | None = None) -> None:
    """Build the server, report it to `on_ready`, serve until SIGINT/SIGTERM."""
    server = make_server(config)
    if on_ready is not None:
        on_ready(server)
    server.serve_forever()
