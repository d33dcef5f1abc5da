"""`vla finetune --rth`: RT-H's two queries through the fine-tuning loop, on a dataset `vla rth label` wrote."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import vla
from scripts.finetune import main
from vla.data.rlds import load_frames
from vla.rth.errors import MissingMotionsError
from vla.rth.finetune import NOW, MotionSwap, motion_query_rows
from vla.rth.label import LabelConfig, label_dataset
from vla.rth.query import rth_info
from vla.rth.train import read_motion_episodes
from vla.train import FinetuneConfig, OptimSettings, finetune
from vla.train.data import SampleOrder
from vla.train.errors import ResumeError, TrainConfigError
from vla.train.loop import SUMMARY


@pytest.fixture(scope="module")
def rth_data(colour_data, tmp_path_factory) -> pathlib.Path:
    """data_dir with `colours_rth`: the colour episodes labelled by the real labeller (1 cm per axis)."""
    out = tmp_path_factory.mktemp("rth")
    label_dataset("colours", colour_data, out, LabelConfig(threshold=0.01, absolute=True,
                                                           native_actions_are_eef_delta=True))
    return out


def _config(out: pathlib.Path, data_dir: pathlib.Path, **kw) -> FinetuneConfig:
    base = dict(base="tiny", out=out, data_dir=data_dir, dataset="colours_rth", mode="full", rth=True,
                max_steps=3, batch_size=4, eval_every=3, eval_samples=4, checkpoint_every=3, progress=False,
                optim=OptimSettings(lr=3e-3), heldout_fraction=0.25)
    return FinetuneConfig(**{**base, **kw})


def _frame(data_dir: pathlib.Path) -> dict:
    return next(iter(load_frames("colours_rth", data_dir)))


def test_finetune_rth_writes_a_checkpoint_answering_both_queries(rth_data, tmp_path):
    out = finetune(_config(tmp_path / "run", rth_data))
    model = vla.OpenVLA.from_pretrained(out)
    info = rth_info(model)
    assert info is not None and (info.mix, info.lookahead) == (0.5, 1)
    labelled = {m for ep in read_motion_episodes("colours_rth", rth_data) for m in ep.motions}
    assert set(info.vocabulary) <= labelled and len(info.vocabulary) >= 2
    assert info.tasks == ("move to the coloured cube",)
    frame = _frame(rth_data)
    image, task = frame["images"]["primary"], frame["instruction"]
    assert isinstance(model.predict_motion(image, task), str)
    action = model.predict_action(image, task, unnorm_key="colours_rth", motion="move arm up")
    assert action.shape == (7,) and np.isfinite(action).all()
    summary = json.loads((out / SUMMARY).read_text())
    assert 0.0 <= summary["heldout_accuracy"] <= 1.0  # the action query with the labelled motion


def test_cli_rth_flags_reach_the_checkpoint(rth_data, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["--base", "tiny", "--dataset", "colours_rth", "--data-dir", str(rth_data), "--out", str(out),
                 "--mode", "lora", "--merge", "--lora.rank", "4", "--max-steps", "2", "--batch-size", "4",
                 "--eval-samples", "4", "--no-progress", "--rth", "--rth-mix", "0.25", "--rth-lookahead", "0"])
    assert code == 0 and str(out) in capsys.readouterr().out
    info = rth_info(vla.OpenVLA.from_pretrained(out))
    assert (info.mix, info.lookahead) == (0.25, 0)


def test_resume_continues_an_rth_run_and_refuses_other_rth_settings(rth_data, tmp_path):
    out = tmp_path / "resumed"
    finetune(_config(out, rth_data, stop_at_step=2, checkpoint_every=2))
    with pytest.raises(ResumeError, match="rth_mix"):
        finetune(_config(out, rth_data, resume=True, rth_mix=0.75))
    finetune(_config(out, rth_data, resume=True))
    assert rth_info(vla.OpenVLA.from_pretrained(out)) is not None


def test_motion_rows_are_the_mix_share_spread_over_micro_batches():
    rows = motion_query_rows(8, 0.5)
    assert rows.sum() == 4 and motion_query_rows(8, 0.0).sum() == 0 and motion_query_rows(8, 1.0).all()
    assert motion_query_rows(2, 0.3).sum() == 1  # round(0.6)
    order = SampleOrder(np.ones(20), seed=0, batch_size=8)
    parts = order.micro_positions(rank=0, world_size=1, grad_accum=2)
    assert [int(rows[p].sum()) for p in parts] == [2, 2]  # each micro-batch trains both queries


def test_dataset_without_motions_names_the_label_command(colour_data, tmp_path):
    with pytest.raises(MissingMotionsError, match=f"vla rth label colours --data-dir {colour_data} --out OUT"):
        finetune(_config(tmp_path / "flat", colour_data, dataset="colours"))


def test_swap_rows_are_action_rows_and_draws_depend_only_on_seed_step_position():
    motions = np.array([("move arm up", "move arm up")] * 6 + [("move arm left", "move arm left")] * 6, dtype=object)
    actions = np.zeros((12, 7), np.float32)
    actions[:6, 2], actions[6:, 1], actions[:, 6] = 1.0, 1.0, 0.5
    swap = MotionSwap(motions, actions, batch_size=8, mix=0.5, swap=0.5, seed=3)
    assert swap.rows.sum() == 2 and not (swap.rows & motion_query_rows(8, 0.5)).any()
    positions = np.arange(8)
    first = swap.draws(5, positions, motions[:8], actions[:8])
    again = swap.draws(5, positions, motions[:8], actions[:8])
    assert [d is None for d in first] == list(~swap.rows)
    for (m, a), (m2, a2), own in zip([d for d in first if d], [d for d in again if d], motions[:8][swap.rows]):
        assert m == m2 and np.array_equal(a, a2) and m != own[NOW]  # resumable; always another motion
        assert a[6] == 0.5  # no gripper word: the frame's gripper


def test_finetune_rth_swap_trains_resumes_and_refuses_another_share(rth_data, tmp_path):
    out = tmp_path / "swap"
    finetune(_config(out, rth_data, rth_swap=0.5, stop_at_step=2, checkpoint_every=2))
    with pytest.raises(ResumeError, match="rth_swap"):
        finetune(_config(out, rth_data, resume=True, rth_swap=0.25))
    finetune(_config(out, rth_data, resume=True, rth_swap=0.5))
    assert rth_info(vla.OpenVLA.from_pretrained(out)) is not None
    composed = tmp_path / "composed"  # half the swaps composed axis by axis, on symmetric action bins
    finetune(_config(composed, rth_data, rth_swap=0.5, rth_swap_compose=0.5, symmetric_action_bounds=True,
                     stop_at_step=2, checkpoint_every=2))
    with pytest.raises(ResumeError, match="rth_swap_compose"):
        finetune(_config(composed, rth_data, resume=True, rth_swap=0.5, symmetric_action_bounds=True))
    with pytest.raises(ResumeError, match="symmetric_action_bounds"):
        finetune(_config(composed, rth_data, resume=True, rth_swap=0.5, rth_swap_compose=0.5))
    finetune(_config(composed, rth_data, resume=True, rth_swap=0.5, rth_swap_compose=0.5,
                     symmetric_action_bounds=True))
    stats = vla.OpenVLA.from_pretrained(composed).norm_stats["colours_rth"]["action"]
    arm = np.asarray(stats["mask"], bool)
    assert arm.any() and np.all(np.asarray(stats["q99"])[arm] > 0)
    np.testing.assert_allclose(np.asarray(stats["q01"])[arm], -np.asarray(stats["q99"])[arm])  # -b..b stored


@pytest.mark.parametrize("flags, message", [
    (["--rth", "--rth-mix", "1.5", "--mode", "full"], r"--rth-mix 1.5 must be in \[0, 1\]"),
    (["--rth", "--rth-swap", "1", "--mode", "full"], r"--rth-swap 1.0 must be in \[0, 1\)"),
    (["--rth-swap", "0.3", "--mode", "full"], "add --rth"),
    (["--rth", "--rth-swap-compose", "0.5", "--mode", "full"], "--rth-swap-compose 0.5 .* needs --rth-swap > 0"),
    (["--rth", "--rth-lookahead", "-1", "--mode", "full"], "--rth-lookahead -1 must be >= 0"),
    (["--rth-mix", "0.3", "--mode", "full"], "add --rth"),
    (["--rth"], "add --merge"),
])
def test_cli_refuses_bad_rth_flags(flags, message, tmp_path):
    with pytest.raises(TrainConfigError, match=message):
        main(["--base", "tiny", "--dataset", "colours_rth", "--data-dir", str(tmp_path), "--out",
              str(tmp_path / "o"), *flags])
