"""What a `PolicyServer` serves: the `ServedPolicy` protocol, `NoopPolicy`, and `ModelPolicy`.

A served policy sees whole batches: the server groups queued requests with equal
`ActRequest.batch_key` and calls `act_batch` once per group.
"""
from __future__ import annotations

import logging
import pathlib
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from serving.errors import InvalidRequestError, ServerConfigError
from serving.protocol import ActRequest

log = logging.getLogger(__name__)

MAX_SAMPLES = 256  # upper bound on options["n_samples"]: candidates for re-ranking, not a data set


class ServedPolicy(Protocol):
    """The seam between the server and a model."""

    def metadata(self) -> dict[str, Any]:
        """Name, action dim and space, cameras, image size, unnorm keys, supported options."""
        ...

    def check(self, request: ActRequest) -> None:
        """Raise `InvalidRequestError` for a request this policy cannot serve; called before queueing."""
        ...

    def act_batch(self, requests: Sequence[ActRequest]) -> list[dict[str, Any]]:
        """One result map per request (at least `"action"`); requests share one `batch_key`."""
        ...

    def reset(self) -> None:
        """Forget per-episode state."""
        ...


def _check_options(options: Mapping[str, Any], supported: Mapping[str, str]) -> None:
    unknown = set(options) - set(supported)
    if unknown:
        raise InvalidRequestError(f"unsupported options {sorted(unknown)}; this policy supports {dict(supported)}")
    n = options.get("n_samples", 1)  # optional option
    if type(n) is not int or not 1 <= n <= MAX_SAMPLES:
        raise InvalidRequestError(f"option n_samples={n!r} must be an int in 1..{MAX_SAMPLES}")


class NoopPolicy:
    """Zero actions, instantly, for any cameras: wiring checks for a robot, and transport benchmarks."""

    OPTIONS = {"n_samples": f"int 1..{MAX_SAMPLES}: also return that many candidate actions (zeros)"}

    def __init__(self, action_dim: int = 7) -> None:
        if type(action_dim) is not int or action_dim < 1:
            raise ServerConfigError(f"action_dim={action_dim!r} must be a positive int (7 for OpenVLA's arms)")
        self.action_dim = action_dim
        self._zeros = np.zeros(action_dim, np.float32)  # shared: replies are encoded, never mutated

    def metadata(self) -> dict[str, Any]:
        """Describes a model-less policy that accepts any cameras."""
        return {
            "name": "noop",
            "action_dim": self.action_dim,
            "action_space": "zeros",
            "cameras": [],  # empty: any camera names are accepted
            "image_size": None,
            "unnorm_keys": [],
            "options": dict(self.OPTIONS),
        }

    def check(self, request: ActRequest) -> None:
        """Only options are checked: a no-op accepts any images."""
        _check_options(request.options, self.OPTIONS)

    def act_batch(self, requests: Sequence[ActRequest]) -> list[dict[str, Any]]:
        """Zeros for each request (and zero candidates when asked)."""
        out = []
        for r in requests:
            result: dict[str, Any] = {"action": self._zeros}
            if "n_samples" in r.options:
                result["candidates"] = np.zeros((r.options["n_samples"], self.action_dim), np.float32)
            out.append(result)
        return out

    def reset(self) -> None:
        """Nothing to forget."""


class ModelPolicy:
    """Serves a `vla.OpenVLA`: a batch of observations goes through one `predict_actions` call."""

    def __init__(self, model: Any, unnorm_key: str | None = None) -> None:
        self.model = model
        stats = dict(getattr(model, "norm_stats", None) or {})
        if unnorm_key is not None and unnorm_key not in stats:
            raise ServerConfigError(f"--unnorm-key {unnorm_key!r} is not in the checkpoint's statistics; "
                                    f"known: {sorted(stats)}")
        self.unnorm_keys = sorted(stats)
        self.default_unnorm_key = unnorm_key
        self.cameras = _model_cameras(model)

    def metadata(self) -> dict[str, Any]:
        """From the model config: name, action dim, cameras, image size, unnorm keys."""
        cfg = self.model.config
        key = self.default_unnorm_key or (self.unnorm_keys[0] if len(self.unnorm_keys) == 1 else None)
        action_dim = None
        if key is not None:
            action_dim = len(self.model.norm_stats[key]["action"]["q01"])
        return {
            "name": str(getattr(cfg, "name_or_path", "") or getattr(cfg, "_name_or_path", "") or type(self.model).__name__),
            "action_dim": action_dim if action_dim is not None else _config_value(cfg, ("action_dim", "n_action_dims"), 7),
            "action_space": "unnormalized with the checkpoint's q01/q99 statistics",
            "cameras": list(self.cameras),
            "image_size": _config_value(cfg, ("image_size", "image_sizes"), None),
            "unnorm_keys": self.unnorm_keys,
            "default_unnorm_key": self.default_unnorm_key,
            "options": {},
        }

    def check(self, request: ActRequest) -> None:
        """The cameras must be exactly the model's roles; the unnorm key must be known."""
        if set(request.images) != set(self.cameras):
            raise InvalidRequestError(
                f"this model takes images {list(self.cameras)}; the request sent {sorted(request.images)}. "
                "Key images by role (robot.rigs.apply_rig maps camera names to roles)")
        _check_options(request.options, {})
        key = request.unnorm_key or self.default_unnorm_key
        if key is not None and key not in self.unnorm_keys:
            raise InvalidRequestError(f"unnorm_key {key!r} is not in this checkpoint; known: {self.unnorm_keys}")
        if key is None and len(self.unnorm_keys) > 1:
            raise InvalidRequestError(f"this checkpoint has statistics for {self.unnorm_keys}; pass unnorm_key "
                                      "(or start the server with --unnorm-key)")

    def act_batch(self, requests: Sequence[ActRequest]) -> list[dict[str, Any]]:
        """One `predict_actions` call for the whole batch."""
        key = requests[0].unnorm_key or self.default_unnorm_key
        if len(self.cameras) == 1:
            images: list[Any] = [r.images[self.cameras[0]] for r in requests]
        else:
            images = [{role: r.images[role] for role in self.cameras} for r in requests]
        actions = np.asarray(self.model.predict_actions(images, [r.instruction for r in requests], unnorm_key=key))
        return [{"action": a} for a in actions]

    def reset(self) -> None:
        """OpenVLA is memoryless per step; nothing to forget."""


def _config_value(cfg: Any, names: tuple[str, ...], default: Any) -> Any:
    # metadata is descriptive: take the first of several attribute spellings the config may use
    for name in names:
        if hasattr(cfg, name):
            value = getattr(cfg, name)
            return list(value) if isinstance(value, tuple) else value
    return default


def _model_cameras(model: Any) -> tuple[str, ...]:
    roles = _config_value(model.config, ("image_roles", "camera_roles", "roles"), ["primary"])
    return tuple(roles)


def load_policy(
    checkpoint: str | pathlib.Path,
    quantization: str | None = None,
    unnorm_key: str | None = None,
) -> ModelPolicy:
    """A `ModelPolicy` over a checkpoint folder (imports torch and the model only here)."""
    path = pathlib.Path(checkpoint)
    if not path.is_dir():
        raise ServerConfigError(f"checkpoint folder {path} does not exist; pass a folder written by "
                                "`model.save_pretrained` or `vla finetune` (or --noop to test wiring)")
    import vla  # deferred: `vla serve --noop` and the client never load torch

    model = vla.OpenVLA.from_pretrained(path, quantization=quantization)
    log.info("loaded %s", path)
    return ModelPolicy(model, unnorm_key=unnorm_key)
