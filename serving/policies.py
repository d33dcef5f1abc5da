"""What a `PolicyServer` serves: the `ServedPolicy` protocol, `NoopPolicy`, and `ModelPolicy`.

A served policy sees whole batches: the server groups queued requests with equal
`ActRequest.batch_key` and calls `act_batch` once per group.
"""
from __future__ import annotations

import inspect
import logging
import pathlib
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from serving.errors import InvalidRequestError, ServerConfigError
from serving.protocol import ActRequest

log = logging.getLogger(__name__)

MAX_SAMPLES = 256  # upper bound on options["n_samples"]: candidates for re-ranking, not a data set
ADAPTER_CONFIG = "adapter_config.json"  # peft's file name: the folder is an adapter, not a full model
PRIMARY = "primary"  # the camera role a single-image model is given (as robot.rigs names it)
# options a sampling model's predict_actions takes (V-GPS asks for K candidates)
SAMPLING_OPTIONS = {"n_samples": f"int 1..{MAX_SAMPLES}: return that many sampled candidates",
                    "temperature": "float > 0: sampling temperature"}
RTH_KEY = "rth"  # config.json table of an RT-H checkpoint
RTH_OPTIONS = {
    "motion": "str: an RT-H motion (e.g. 'move arm left') that replaces the motion query's answer",
    "planned_motion": "str: the next_motion an earlier reply gave for this step; the action query follows it "
                      "(motion_source 'policy') and the motion query does not run on this image first",
    "lookahead": "bool: also answer next_motion, the motion query for the step ahead, batched with the action "
                 "query (RT-H's deployment; send it back as planned_motion)",
}
MOTION_OPTIONS = ("motion", "planned_motion")  # words for the action query: an override or the policy's own plan


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
    if not options:
        return
    unknown = set(options) - set(supported)
    if unknown:
        raise InvalidRequestError(f"unsupported options {sorted(unknown)}; this policy supports {dict(supported)}")
    n = options.get("n_samples", 1)  # optional option
    if type(n) is not int or not 1 <= n <= MAX_SAMPLES:
        raise InvalidRequestError(f"option n_samples={n!r} must be an int in 1..{MAX_SAMPLES}")
    t = options.get("temperature", 1.0)  # optional option
    if type(t) not in (int, float) or not t > 0:
        raise InvalidRequestError(f"option temperature={t!r} must be a number > 0")


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


def _rig_for(roles: Sequence[str]) -> str:
    """The robot rig giving exactly `roles` (robot.rigs.NAMED_RIGS), or a custom-rig hint."""
    from robot.rigs import NAMED_RIGS

    return next((repr(n) for n, r in NAMED_RIGS.items() if tuple(r) == tuple(roles)), "a custom {role: camera} rig")


class ModelPolicy:
    """Serves a `vla.OpenVLA`: a batch of observations goes through one `predict_actions` call."""

    def __init__(self, model: Any, unnorm_key: str | None = None, name: str | None = None,
                 camera: str = PRIMARY) -> None:
        self.model, self.name, self.camera = model, name or type(model).__name__, camera
        # a multi-camera checkpoint (vla.model.multi_image) reads one image per role, in this order
        roles = tuple(getattr(model.config, "image_roles", None) or (PRIMARY,))
        self.roles = (camera,) if roles == (PRIMARY,) else roles  # a plain checkpoint: served under `camera`
        self.camera = self.roles[0]
        self.unnorm_keys = sorted(model.norm_stats)
        if unnorm_key is not None and unnorm_key not in model.norm_stats:
            raise ServerConfigError(f"--unnorm-key {unnorm_key!r} is not in the checkpoint's statistics; "
                                    f"known: {self.unnorm_keys}")
        self.default_unnorm_key = unnorm_key
        # sampling (for V-GPS re-ranking) only where the model's predict_actions offers it
        params = inspect.signature(model.predict_actions).parameters
        self.options = {k: v for k, v in SAMPLING_OPTIONS.items() if k in params}
        # RT-H checkpoints (config.json carries an `rth` table) answer a motion query first and take a
        # motion override; see vla/rth/query.py
        self.rth = dict(model.config.extra[RTH_KEY]) if RTH_KEY in getattr(model.config, "extra", {}) else None
        if self.rth is not None:
            self.options = dict(RTH_OPTIONS)

    def metadata(self) -> dict[str, Any]:
        """From the model: action dim per statistics key, camera role, image size, unnorm keys."""
        dims = {k: len(v["action"]["q01"]) for k, v in self.model.norm_stats.items()}
        if self.default_unnorm_key is not None:
            action_dim = dims[self.default_unnorm_key]
        else:  # one dim for all keys, or None (then see action_dims)
            action_dim = next(iter(dims.values())) if len(set(dims.values())) == 1 else None
        return {
            "name": self.name,
            "action_dim": action_dim,
            "action_dims": dims,
            "action_space": "un-normalized with the checkpoint's q01/q99 statistics (OpenVLA convention)",
            "cameras": list(self.roles),
            "image_roles": list(self.roles),
            "image_size": [self.model.config.image_size] * 2,
            "unnorm_keys": self.unnorm_keys,
            "default_unnorm_key": self.default_unnorm_key,
            "options": dict(self.options),
            **({"rth": {"checkpoint_id": self.rth["checkpoint_id"], "lookahead": self.rth["lookahead"]}}
               if self.rth is not None else {}),
        }

    def check(self, request: ActRequest) -> None:
        """The cameras must be exactly the model's role; the unnorm key must be known."""
        if set(request.images) != set(self.roles):
            wanted = f"one image keyed {self.camera!r}" if len(self.roles) == 1 else f"images keyed {list(self.roles)}"
            raise InvalidRequestError(
                f"this model takes {wanted}; the request sent "
                f"{sorted(request.images)}. Key images by role (robot.rigs.apply_rig maps camera names to roles; "
                f"the rig that fits: {_rig_for(self.roles)})")
        rth_asked = [k for k in (*MOTION_OPTIONS, "lookahead") if k in request.options]
        if rth_asked and self.rth is None:
            raise InvalidRequestError(f"option {rth_asked[0]!r} needs an RT-H checkpoint (fine-tuned with --rth); this "
                                      "one has no motion query: drop the option or serve an RT-H checkpoint")
        for name in MOTION_OPTIONS:
            motion = request.options.get(name)
            if name in request.options and (not isinstance(motion, str) or not motion.strip()):
                raise InvalidRequestError(f"option {name}={motion!r} must be non-empty words such as 'move arm left'")
        if all(k in request.options for k in MOTION_OPTIONS):
            raise InvalidRequestError("options motion (an override) and planned_motion (the policy's own plan) "
                                      "both name this step's motion; send one")
        if not isinstance(request.options.get("lookahead", False), bool):
            raise InvalidRequestError(f"option lookahead={request.options['lookahead']!r} must be true or false")
        _check_options(request.options, self.options)
        key = request.unnorm_key or self.default_unnorm_key
        if key is not None and key not in self.model.norm_stats:
            raise InvalidRequestError(f"unnorm_key {key!r} is not in this checkpoint; known: {self.unnorm_keys}")
        if key is None and len(self.unnorm_keys) != 1:
            raise InvalidRequestError(f"this checkpoint has statistics for {self.unnorm_keys}; pass unnorm_key "
                                      "(or start the server with --unnorm-key)")

    def act_batch(self, requests: Sequence[ActRequest]) -> list[dict[str, Any]]:
        """One `predict_actions` call for the whole batch (per request when sampling candidates)."""
        key = requests[0].unnorm_key or self.default_unnorm_key
        if self.rth is not None:
            return self._act_rth(requests, key)
        if requests[0].options:  # sampling: K candidates per observation, the first is the action
            out = []
            for r in requests:
                candidates = np.asarray(self.model.predict_actions(
                    [self._images(r)], [r.instruction], unnorm_key=key, **r.options))
                out.append({"action": candidates[0], "candidates": candidates})
            return out
        images = [self._images(r) for r in requests]
        actions = np.asarray(self.model.predict_actions(images, [r.instruction for r in requests], unnorm_key=key))
        return [{"action": a} for a in actions]

    def _images(self, request: ActRequest) -> Any:
        """One image for a one-camera model, else {role: image} in the model's role order."""
        if len(self.roles) == 1:
            return request.images[self.camera]
        return {role: request.images[role] for role in self.roles}

    def _act_rth(self, requests: Sequence[ActRequest], key: str | None) -> list[dict[str, Any]]:
        """Motion query (unless the batch's options give the motion), then the action query; with
        `lookahead`, the next motion query runs in the same batch as the action query."""
        from vla.rth.query import predict_actions_given, predict_lookahead, predict_motions

        images = [self._images(r) for r in requests]
        instructions = [r.instruction for r in requests]
        options = requests[0].options  # equal within a batch (they are in batch_key)
        override = options.get("motion")
        given = override if override is not None else options.get("planned_motion")
        motions = [given] * len(requests) if given is not None else predict_motions(self.model, images, instructions)
        source = "policy" if override is None else "override"
        if not options.get("lookahead", False):
            actions = predict_actions_given(self.model, images, instructions, motions, unnorm_key=key)
            return [{"action": a, "motion": m, "motion_source": source} for a, m in zip(actions, motions)]
        actions, upcoming = predict_lookahead(self.model, images, instructions, motions, unnorm_key=key)
        return [{"action": a, "motion": m, "motion_source": source, "next_motion": n}
                for a, m, n in zip(actions, motions, upcoming)]

    def reset(self) -> None:
        """OpenVLA is memoryless per step; nothing to forget."""


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
    if (path / ADAPTER_CONFIG).is_file():
        raise ServerConfigError(f"{path} holds LoRA adapter files ({ADAPTER_CONFIG}); serving an adapter on its base "
                                "is not supported yet: fine-tune with --merge (or merge the adapter) and serve that folder")
    import vla  # deferred: `vla serve --noop` and the client never load torch

    model = vla.OpenVLA.from_pretrained(path, quantization=quantization)
    log.info("loaded %s", path)
    return ModelPolicy(model, unnorm_key=unnorm_key, name=path.name)
