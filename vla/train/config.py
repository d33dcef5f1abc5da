"""The fine-tuning run as typed, frozen dataclasses; the `vla finetune` flags are generated from them.

Defaults follow OpenVLA's LoRA fine-tuning recipe (vla-scripts/finetune.py): rank 32 on all linear
layers, AdamW at 5e-4, gradient clipping at 1.0, seed 7.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Literal

from vla.data.registry import MIXTURES_PATH
from vla.train.errors import TrainConfigError

MODES = ("lora", "qlora", "full")
SCHEDULES = ("constant", "cosine", "linear")
PRECISIONS = ("auto", "bf16", "fp32")
RTH_MIX, RTH_LOOKAHEAD = 0.5, 1  # RT-H's recipe: half motion queries, the motion one step ahead


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter shape (modes lora and qlora)."""

    rank: int = 32  # OpenVLA's fine-tuning default
    alpha: float | None = None  # None: min(rank, 16), as vla.add_lora and OpenVLA choose
    dropout: float = 0.0
    target_modules: str = "all-linear"  # "all-linear" or comma-separated module names (q_proj,v_proj)

    def targets(self) -> str | list[str]:
        """The target_modules argument for `vla.add_lora`."""
        if self.target_modules == "all-linear":
            return "all-linear"
        return [t.strip() for t in self.target_modules.split(",") if t.strip()]


@dataclasses.dataclass(frozen=True)
class OptimSettings:
    """AdamW, a warmup then a schedule, and gradient clipping."""

    lr: float = 5e-4  # OpenVLA's LoRA learning rate; full fine-tuning usually wants ~2e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0  # linear ramp from 0 to lr over these optimizer steps
    schedule: Literal["constant", "cosine", "linear"] = "constant"  # after warmup, towards 0 at max_steps
    max_grad_norm: float = 1.0  # clip the global gradient norm; 0 disables clipping


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run: base model, data, mode, optimization, checkpoints and logs."""

    base: str  # an OpenVLA checkpoint folder, or a preset name (random init) such as `tiny`
    out: pathlib.Path  # output folder: the fine-tuned checkpoint, checkpoints/ and logs/
    data_dir: pathlib.Path  # folder holding <dataset>/<version>/dataset_info.json
    dataset: str | None = None  # one RLDS dataset (registry name or a standardized-schema set)
    mixture: str | None = None  # a named mixture from --mixtures-file (instead of --dataset)
    mixtures_file: pathlib.Path = MIXTURES_PATH  # TOML of `[name]` tables of `dataset = weight`
    mode: Literal["lora", "qlora", "full"] = "lora"
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 16  # samples per optimizer step, summed over processes and accumulation
    grad_accum: int = 1  # micro-batches per optimizer step (micro batch = batch_size / (grad_accum * nproc))
    lora: LoraSettings = LoraSettings()
    optim: OptimSettings = OptimSettings()
    freeze_vision: bool = False  # keep the vision backbone's weights (and its LoRA layers) fixed
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on GPUs that support it
    seed: int = 7
    image_role: str = "primary"  # which camera of the dataset the model sees
    # OpenVLA's training augmentation (random resized crop of 0.9 area + colour jitter), seeded per
    # (seed, step, frame) so --resume stays exact; the checkpoint then evaluates on the 0.9-area centre crop
    image_aug: bool = False
    # bin each arm action dim over -b..b, b = max(|q01|, |q99|), instead of OpenVLA's q01..q99, so a direction
    # the demos never took stays expressible (a correction's "move arm backward"); for delta actions
    symmetric_action_bounds: bool = False
    # several cameras (eye-in-hand): comma-separated roles in token order, e.g. "primary,wrist", or a rig
    # name (third_person, eye_in_hand, both, both-vib); replaces --image-role
    images: str | None = None
    vib: str | None = None  # roles (of --images) whose tokens pass a variational information bottleneck
    vib_beta: float = 0.0  # weight of the bottleneck's KL term (tune on in-distribution validation data)
    # RT-H (vla/rth): one model trained on the motion query and the motion-conditioned action query; the
    # dataset must carry per-step language_motion (a <name>_rth set written by `vla rth label`)
    rth: bool = False
    rth_mix: float = RTH_MIX  # with --rth: share of motion-query samples per batch, in [0, 1]
    rth_lookahead: int = RTH_LOOKAHEAD  # with --rth: the motion query learns the motion this many steps ahead (0: same step)
    # with --rth: share of action-query rows trained on another motion and its typical action, so the action
    # query follows a typed motion (vla.rth.train.MotionPrototypes); 0: RT-H's recipe
    rth_swap: float = 0.0
    # with --rth-swap: share of those rows whose motion is composed axis by axis, so motions the demos never
    # had ("move arm left and move arm backward") get a trained meaning
    rth_swap_compose: float = 0.0
    split: str = "train"  # the dataset split to read, by its tfds name (RLDS sets usually have only "train")
    heldout_fraction: float = 0.1  # share of episodes kept out of training for held-out metrics (0: none)
    eval_every: int = 100  # held-out accuracy/L1 every N steps (and at the end)
    eval_samples: int = 64  # held-out frames per evaluation
    log_every: int = 10  # tensorboard scalars every N steps
    checkpoint_every: int = 500  # atomic training checkpoint every N steps (and at the end)
    keep_checkpoints: int = 1  # complete checkpoints kept on disk (older ones are deleted)
    merge: bool = False  # merge LoRA into the weights; otherwise write adapter files + base reference
    resume: bool = False  # continue from the last complete checkpoint in --out
    overwrite: bool = False  # delete an existing --out first
    stop_at_step: int | None = None  # end this session early at this step (checkpointed); --resume continues
    allow_new_action_dim: bool = False  # accept a dataset whose action size differs from the base's statistics
    device: str = "auto"  # auto: cuda if available, else cpu
    progress: bool = True  # show a progress bar on rank 0
    wandb_project: str | None = None  # also log to Weights & Biases (needs wandb installed)

    def __post_init__(self) -> None:
        if (self.dataset is None) == (self.mixture is None):
            raise TrainConfigError("give exactly one of --dataset NAME or --mixture NAME "
                                   f"(got dataset={self.dataset!r}, mixture={self.mixture!r})")
        if self.mode not in MODES:
            raise TrainConfigError(f"--mode {self.mode!r} is not one of {list(MODES)}")
        if self.optim.schedule not in SCHEDULES:
            raise TrainConfigError(f"--optim.schedule {self.optim.schedule!r} is not one of {list(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise TrainConfigError(f"--precision {self.precision!r} is not one of {list(PRECISIONS)}")
        positive = {"max_steps": self.max_steps, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                    "eval_every": self.eval_every, "eval_samples": self.eval_samples, "log_every": self.log_every,
                    "checkpoint_every": self.checkpoint_every, "keep_checkpoints": self.keep_checkpoints,
                    "lora.rank": self.lora.rank}
        bad = {k: v for k, v in positive.items() if v < 1}
        if bad:
            raise TrainConfigError(f"these settings must be >= 1: {bad}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise TrainConfigError(f"--heldout-fraction {self.heldout_fraction} must be in [0, 1)")
        if self.optim.warmup_steps < 0 or self.optim.warmup_steps > self.max_steps:
            raise TrainConfigError(f"--optim.warmup-steps {self.optim.warmup_steps} must be in [0, max_steps="
                                   f"{self.max_steps}]")
        if self.optim.lr <= 0 or self.optim.max_grad_norm < 0 or not 0.0 <= self.lora.dropout < 1.0:
            raise TrainConfigError(f"need lr > 0 (got {self.optim.lr}), max_grad_norm >= 0 (got "
                                   f"{self.optim.max_grad_norm}) and 0 <= lora.dropout < 1 (got {self.lora.dropout})")
        if self.resume and self.overwrite:
            raise TrainConfigError("--resume continues the run in --out and --overwrite deletes it; pick one")
        if self.stop_at_step is not None and not 1 <= self.stop_at_step <= self.max_steps:
            raise TrainConfigError(f"--stop-at-step {self.stop_at_step} must be in [1, max_steps={self.max_steps}]")
        self.cameras()  # parses and validates --images / --vib / --vib-beta
        if self.images is not None and self.mode == "qlora":
            raise TrainConfigError("--images with --mode qlora is not supported (the 4-bit merge reloads the "
                                   "one-camera base); use --mode lora --merge or --mode full")
        if self.images is not None and self.mode == "lora" and not self.merge:
            raise TrainConfigError("--images trains new role embeddings that adapter files cannot hold; "
                                   "add --merge (or use --mode full)")
        if self.image_aug and self.mode != "full" and not self.merge:
            raise TrainConfigError("--image-aug makes the checkpoint evaluate on a centre crop, a setting of the "
                                   "model config that adapter files do not carry; add --merge (or use --mode full)")
        self._check_rth()
        if self.merge and self.mode == "full":
            raise TrainConfigError("--merge applies to LoRA adapters; --mode full already writes plain weights")

    def _check_rth(self) -> None:
        if not self.rth:
            if (self.rth_mix, self.rth_lookahead, self.rth_swap, self.rth_swap_compose) != (RTH_MIX, RTH_LOOKAHEAD,
                                                                                             0.0, 0.0):
                raise TrainConfigError(f"--rth-mix {self.rth_mix} / --rth-lookahead {self.rth_lookahead} / --rth-swap "
                                       f"{self.rth_swap} / --rth-swap-compose {self.rth_swap_compose} set the RT-H "
                                       "queries; add --rth (on a dataset labelled by "
                                       "`vla rth label`)")
            return
        from vla.rth.errors import MotionSpecError
        from vla.rth.train import check_mix_lookahead, check_swap, check_swap_compose

        try:
            check_mix_lookahead(self.rth_mix, self.rth_lookahead)
            check_swap(self.rth_swap, self.rth_mix)
            check_swap_compose(self.rth_swap_compose, self.rth_swap)
        except MotionSpecError as e:
            raise TrainConfigError(str(e)) from e
        if self.mode != "full" and not self.merge:
            raise TrainConfigError("--rth records the motion vocabulary in the checkpoint's config.json, which "
                                   "adapter files do not carry; add --merge (or use --mode full)")

    def cameras(self) -> tuple[tuple[str, ...], tuple[str, ...], float]:
        """(image roles, VIB roles, beta) from --images / --vib / --vib-beta (or --image-role alone)."""
        from vla.errors import ConfigError
        from vla.model.multi_image import RIG_ROLES, check_image_roles

        if self.images is None:
            if self.vib is not None or self.vib_beta:
                raise TrainConfigError("--vib and --vib-beta need --images (e.g. --images primary,wrist --vib primary)")
            return (self.image_role,), (), 0.0
        if self.images in RIG_ROLES:
            roles, vib = RIG_ROLES[self.images]
        else:
            roles, vib = tuple(r.strip() for r in self.images.split(",")), ()
        if self.vib is not None:
            vib = tuple(r.strip() for r in self.vib.split(","))
        try:
            check_image_roles(roles, vib, self.vib_beta)
        except ConfigError as e:
            raise TrainConfigError(f"--images {self.images!r} --vib {self.vib!r} --vib-beta {self.vib_beta}: {e}") from e
        return roles, vib, self.vib_beta if vib else 0.0

    @property
    def datasets_arg(self) -> str:
        """The dataset or mixture name as given."""
        return self.dataset if self.dataset is not None else str(self.mixture)

    def micro_batch(self, world_size: int) -> int:
        """Samples per process per micro-step; the global batch must split evenly."""
        parts = self.grad_accum * world_size
        if self.batch_size % parts:
            raise TrainConfigError(
                f"--batch-size {self.batch_size} does not split into grad_accum {self.grad_accum} x "
                f"{world_size} processes; use a multiple of {parts}")
        return self.batch_size // parts

    def fingerprint(self) -> dict:
        """The settings a resumed run must share with the run it continues."""
        keep = ("base", "dataset", "mixture", "mode", "max_steps", "batch_size", "grad_accum", "lora", "optim",
                "freeze_vision", "precision", "seed", "image_role", "image_aug", "split", "heldout_fraction", "images", "vib", "vib_beta")
        if self.symmetric_action_bounds:  # absent otherwise, so runs recorded before the flag still resume
            keep += ("symmetric_action_bounds",)
        if self.rth:  # absent for flat runs, so runs recorded before --rth existed still resume
            keep += ("rth", "rth_mix", "rth_lookahead") + (("rth_swap",) if self.rth_swap else ()) \
                + (("rth_swap_compose",) if self.rth_swap_compose else ())
        d = self.to_json()
        return {k: d[k] for k in keep}

    def to_json(self) -> dict:
        """A JSON-able dict that `from_json` turns back into this config."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    @classmethod
    def from_json(cls, d: dict) -> "FinetuneConfig":
        """Inverse of `to_json`."""
        d = dict(d)
        optim = dict(d.pop("optim"))
        optim["betas"] = tuple(optim["betas"])
        return cls(**{**d, "out": pathlib.Path(d["out"]), "data_dir": pathlib.Path(d["data_dir"]),
                      "mixtures_file": pathlib.Path(d["mixtures_file"]),
                      "lora": LoraSettings(**d.pop("lora")), "optim": OptimSettings(**optim)})
