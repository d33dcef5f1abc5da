"""What a run tells a person: progress bar, tensorboard events, metrics.jsonl, optional wandb, summary."""
from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

log = logging.getLogger(__name__)

LOGS = "logs"
METRICS = "metrics.jsonl"  # one JSON object per optimizer step (and per evaluation); the loss curve


class RunLog:
    """Rank 0's outputs for one session of a run (a resumed run appends after its checkpoint's step)."""

    def __init__(self, out: pathlib.Path, start_step: int, max_steps: int, *, progress: bool,
                 wandb_project: str | None, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from tqdm.auto import tqdm

        self.dir = out / LOGS
        self.dir.mkdir(parents=True, exist_ok=True)
        self._truncate(start_step)  # drop steps an interrupted session logged past its last checkpoint
        self.metrics = (self.dir / METRICS).open("a")
        self.tb = SummaryWriter(str(self.dir), purge_step=start_step)
        self.bar = tqdm(total=max_steps, initial=start_step, disable=not progress, unit="step", dynamic_ncols=True)
        self.wandb = None
        if wandb_project is not None:
            try:
                import wandb
            except ImportError:
                log.warning("--wandb-project given but wandb is not installed (pip install wandb); "
                            "logging to tensorboard only")
            else:
                self.wandb = wandb.init(project=wandb_project, config=config, dir=str(self.dir), resume="allow")

    def _truncate(self, start_step: int) -> None:
        path = self.dir / METRICS
        if path.is_file():
            rows = [r for r in path.read_text().splitlines() if r and json.loads(r)["step"] <= start_step]
            path.write_text("".join(r + "\n" for r in rows))

    def step(self, step: int, scalars: dict[str, float], write_scalars: bool) -> None:
        """Record one optimizer step (1-based); scalars go to tensorboard/wandb every `log_every` steps."""
        self.metrics.write(json.dumps({"step": step, **scalars}) + "\n")
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{scalars['train/loss']:.4f}", acc=f"{scalars['train/accuracy']:.3f}",
                             step_s=f"{scalars['time/step_s']:.3f}", refresh=False)
        if write_scalars:
            self.scalars(step, scalars)

    def scalars(self, step: int, scalars: dict[str, float]) -> None:
        """Write scalars to tensorboard (and wandb)."""
        for k, v in scalars.items():
            self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def evaluation(self, step: int, scalars: dict[str, float]) -> None:
        """Record held-out metrics at `step`."""
        self.metrics.write(json.dumps({"step": step, **scalars}) + "\n")
        self.scalars(step, scalars)
        self.bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()))

    def close(self) -> None:
        """Flush and close everything."""
        self.bar.close()
        self.metrics.close()
        self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def read_metrics(out: pathlib.Path) -> list[dict[str, Any]]:
    """The metrics.jsonl rows of a run (training steps and evaluations)."""
    path = out / LOGS / METRICS
    return [json.loads(r) for r in path.read_text().splitlines() if r]
