"""The demo path end to end on tiny sizes: real collection, real training, `vla serve` as a child process,
evaluation through the ZeroMQ client. It checks the pipeline and summary.json, not the success rate."""
from __future__ import annotations

import json
import pathlib

import pytest
from PIL import Image

from scripts.demo import main as demo_main
from sim.collect import CollectError, dataset_name
from sim.demo import (BASE_TASKS, DemoConfig, DemoError, PretrainConfig, format_report, pretrain_base, resolve_base,
                      run_demo, served)


@pytest.mark.slow
def test_demo_runs_every_stage_and_writes_summary(tmp_path):
    stale = tmp_path / "eval" / "episode_009.mp4"  # an earlier demo's output is replaced, other files kept
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("mine")
    cfg = DemoConfig(out=tmp_path, base="random", episodes=3, collect_workers=1, image_size=56, steps=4, batch_size=4,
                     warmup_steps=1, eval_episodes=2)
    summary = run_demo(cfg)

    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert 0.0 <= summary["success_rate"] <= 1.0 and summary["episodes"] == 2
    assert summary["successes"] == round(summary["success_rate"] * 2)
    assert 0.0 <= summary["ci95"][0] <= summary["success_rate"] <= summary["ci95"][1] <= 1.0
    assert set(summary["wall_s"]) == {"collect", "finetune", "serve_start", "eval", "total"}
    assert all(v > 0 for v in summary["wall_s"].values())
    assert summary["latency_ms"]["n"] > 0 and summary["latency_ms"]["p50"] > 0
    # the demos were collected by the scripted expert on seeds 0..2; evaluation used other seeds
    assert summary["demos"]["episodes"] == 3 and summary["demos"]["expert_success"] == 1.0
    assert summary["eval_seeds"][0] > summary["demos"]["seeds"][1]
    assert summary["train"]["steps"] == 4
    videos = [pathlib.Path(v) for v in summary["videos"]]
    assert len(videos) == 2 and all(v.stat().st_size > 1000 for v in videos)
    assert not stale.exists() and (tmp_path / "notes.txt").read_text() == "mine"
    assert pathlib.Path(summary["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(summary["rollout_frames"]) as strip:  # 5 frames of one 56 px episode, side by side
        assert strip.size == (5 * 56, 56)
    # the model that was served is the trained checkpoint; the server process stopped on SIGTERM
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()
    served_log = (tmp_path / "serve.log").read_text()
    assert "\nserving on tcp://127.0.0.1:" in served_log and "stopped after" in served_log
    report = format_report(summary, tmp_path)
    assert "95% CI" in report and "latency" in report and str(videos[0]) in report


def test_demo_refuses_settings_that_would_mislead():
    with pytest.raises(DemoError, match="--eval-seed 5 overlaps the demo seeds 0..9"):
        DemoConfig(episodes=10, eval_seed=5)
    with pytest.raises(DemoError, match="steps"):
        DemoConfig(steps=0)
    with pytest.raises(DemoError, match="--video 'all'"):
        DemoConfig(video="all")
    with pytest.raises(CollectError, match="mix variant 'perfect'"):
        DemoConfig(mix="perfect:1.0")


def test_missing_base_names_the_command_that_builds_it(tmp_path):
    cfg = DemoConfig(out=tmp_path, base=str(tmp_path / "no-base"))
    with pytest.raises(DemoError, match="holds no checkpoint.*--base random"):
        resolve_base(cfg, tmp_path / "base")


def test_server_that_cannot_start_is_reported_with_its_log(tmp_path):
    with pytest.raises(DemoError, match="vla serve exited with code 2 before serving") as err:
        with served(tmp_path / "no-such-checkpoint", tmp_path / "serve.log", threads=1, timeout_s=60):
            pass
    assert "does not exist" in str(err.value)


def test_demo_help_lists_the_knobs(capsys):
    with pytest.raises(SystemExit) as code:
        demo_main(["--help"])
    assert code.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--task", "--episodes", "--steps", "--model", "--image-size", "--mode", "--eval-episodes"):
        assert flag in text


@pytest.mark.slow
def test_pretrain_base_writes_a_loadable_base_of_the_other_tasks(tmp_path):
    from vla import OpenVLA

    cfg = PretrainConfig(out=tmp_path / "base", work=tmp_path / "work", episodes=2, collect_workers=1,
                         image_size=56, steps=2, batch_size=4, warmup_steps=1)
    out = pretrain_base(cfg)
    model = OpenVLA.from_pretrained(out)
    assert sorted(model.norm_stats) == sorted(dataset_name(t) for t in BASE_TASKS)
    assert model.config.image_size == 56
    assert not (out / "checkpoints").exists() and (out / "train_summary.json").is_file()
    # the base never saw the demo's task, nor its seeds
    assert dataset_name(DemoConfig().task) not in model.norm_stats
    assert cfg.seed >= DemoConfig().eval_seed + DemoConfig().eval_episodes
