"""`vla finetune`: flags reach the library; the summary line is printed; bad flags raise typed errors."""
from __future__ import annotations

import json

import pytest

from scripts.finetune import main
from vla.train.errors import TrainConfigError
from vla.train.loop import RUN_CONFIG


def test_cli_runs_one_step_and_prints_the_summary(colour_data, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["--base", "tiny", "--dataset", "colours", "--data-dir", str(colour_data), "--out", str(out),
                 "--mode", "full", "--max-steps", "1", "--batch-size", "2", "--eval-samples", "2", "--no-progress",
                 "--optim.lr", "1e-4", "--optim.schedule", "cosine"])
    assert code == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("full 1 steps,") and str(out) in line
    recorded = json.loads((out / RUN_CONFIG).read_text())["config"]
    assert recorded["optim"]["lr"] == 1e-4 and recorded["optim"]["schedule"] == "cosine"


def test_cli_refuses_dataset_and_mixture_together(tmp_path):
    with pytest.raises(TrainConfigError, match="exactly one of --dataset"):
        main(["--base", "tiny", "--dataset", "a", "--mixture", "b", "--data-dir", str(tmp_path), "--out",
              str(tmp_path / "o")])
