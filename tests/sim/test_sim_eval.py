"""The evaluation harness: real scenes, a real scripted policy, a real ZeroMQ server, a tiny checkpoint."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import sim
from scripts.sim import main as sim_main
from sim.config import CameraShift
from sim.errors import EvalError
from sim.evaluate import EvalConfig, compare, evaluate, evaluate_spec, paired_bootstrap, wilson_interval

TASK = "widowx-pick-block"


def test_paired_bootstrap_interval_of_a_gain_on_shared_seeds():
    assert paired_bootstrap([1, 0, 1, 0], [1, 0, 1, 0]) == [0.0, 0.0]  # same outcomes: no gain, no spread
    assert paired_bootstrap([1] * 10, [0] * 10) == [1.0, 1.0]
    lo, hi = paired_bootstrap([1] * 15 + [0] * 5, [0] * 5 + [1] * 10 + [0] * 5, seed=1)  # +0.25 on average
    assert lo < 0.25 < hi and paired_bootstrap([1] * 15 + [0] * 5, [0] * 5 + [1] * 10 + [0] * 5, seed=1) == [lo, hi]
    with pytest.raises(EvalError, match="one outcome per shared seed"):
        paired_bootstrap([1, 0], [1, 0, 1])


def test_wilson_interval_matches_known_values():
    lo, hi = wilson_interval(0, 3)
    assert lo == 0.0 and hi == pytest.approx(0.5615, abs=1e-4)
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    with pytest.raises(EvalError):
        wilson_interval(3, 2)


def test_random_policy_gives_summary_and_playable_videos(tmp_path):
    import imageio.v3 as iio

    class Random:
        rng = np.random.default_rng(0)

        def act(self, obs, instruction):
            return np.concatenate([self.rng.uniform(-0.03, 0.03, 3), np.zeros(3), [self.rng.uniform()]])

    cfg = EvalConfig(TASK, tmp_path, episodes=2, max_steps=4, image_size=32, rig="both",
                     camera_shift=CameraShift(0.02, 5))
    summary = evaluate(cfg, Random(), "random")
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert summary["success_rate"] == 0.0 and summary["episodes"] == 2 and summary["mean_length"] == 4
    assert summary["ci95"][0] == 0.0 and 0 < summary["ci95"][1] < 1
    assert summary["latency_ms"]["n"] == 8 and summary["camera_shift"] == {"distance_m": 0.02, "angle_deg": 5}
    assert [e["seed"] for e in summary["per_episode"]] == [1_000_000, 1_000_001]
    video = tmp_path / summary["per_episode"][0]["video"]
    frames = list(iio.imiter(video, plugin="pyav"))  # decode the mp4 back, frame by frame
    assert len(frames) == 5 and frames[0].shape == (32, 64, 3)  # primary | wrist side by side


def test_scripted_policy_succeeds_through_the_harness(tmp_path):
    policy = _SceneExpert(sim.get_task(TASK))
    cfg = EvalConfig(TASK, tmp_path, episodes=2, image_size=32, video="none")
    summary = evaluate(cfg, policy, "scripted-expert")
    policy.scene.close()
    assert summary["success_rate"] == 1.0 and summary["ci95"][1] == 1.0
    assert all(e["reason"] == "success" and e["video"] is None for e in summary["per_episode"])


class _SceneExpert:
    """The scripted expert run on a shadow copy of the harness's scene (physics is deterministic,
    so the same seed and the same actions keep the copy in step); a real, privileged policy."""

    def __init__(self, task):
        self.task = task
        self.scene = task.make(seed=0, options=sim.SceneOptions(render_images=False))
        self.expert = None
        self.seed = None

    def act(self, obs, instruction):
        seed = obs.info["episode_seed"]
        if seed != self.seed:  # mirror the harness's scene: same task, same seed, same physics
            self.seed = seed
            self.scene.reset(seed)
            self.expert = self.task.expert(self.scene, "expert", 0)
        action = self.expert.act(obs, instruction)
        self.scene.act(action)
        return action


def test_policy_over_zeromq(tmp_path):
    from serving.policies import NoopPolicy
    from serving.server import PolicyServer

    server = PolicyServer(NoopPolicy(action_dim=7), host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        cfg = EvalConfig(TASK, tmp_path, episodes=1, max_steps=3, image_size=32, video="none")
        summary = evaluate_spec(cfg, server.address)
    finally:
        server.close()
        thread.join(timeout=5)
    assert summary["policy"] == server.address and summary["success_rate"] == 0.0
    assert summary["per_episode"][0]["reason"] == "max_steps" and summary["latency_ms"]["n"] == 3


def test_unreachable_server_fails_before_any_episode(tmp_path):
    cfg = EvalConfig(TASK, tmp_path, episodes=1, max_steps=3, image_size=32, video="none", policy_timeout_s=0.5)
    with pytest.raises(EvalError, match="tcp://127.0.0.1:9"):
        evaluate_spec(cfg, "tcp://127.0.0.1:9")
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.slow  # builds, saves and loads a tiny OpenVLA (torch import included): ~25 s on 2 busy cores
def test_tiny_checkpoint_in_process(tmp_path):
    import vla
    from vla.model.normalization import statistics_from_arrays

    actions = np.random.default_rng(0).uniform(-0.02, 0.02, size=(50, 7))
    actions[:, 6] = actions[:, 6] > 0
    stats = {"sim": statistics_from_arrays(actions, mask=[True] * 6 + [False])}
    vla.OpenVLA.from_preset("tiny", norm_stats=stats, seed=0).save_pretrained(tmp_path / "ckpt")
    cfg = EvalConfig(TASK, tmp_path / "eval", episodes=1, max_steps=2, image_size=32, video="none")
    summary = evaluate_spec(cfg, str(tmp_path / "ckpt"), unnorm_key="sim")
    assert summary["per_episode"][0]["reason"] == "max_steps", summary["per_episode"][0]["error"]
    assert summary["latency_ms"]["n"] == 2
    wrist_only = EvalConfig(TASK, tmp_path / "eval2", episodes=1, max_steps=2, image_size=32, rig="eye_in_hand")
    with pytest.raises(EvalError, match="third_person"):
        evaluate_spec(wrist_only, str(tmp_path / "ckpt"), unnorm_key="sim")


def test_compare_plot_and_cli(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, rate in ((a, 0.25), (b, 0.75)):
        folder.mkdir()
        (folder / "summary.json").write_text(json.dumps(
            {"task": TASK, "success_rate": rate, "ci95": list(wilson_interval(int(rate * 8), 8)), "episodes": 8}))
    png = compare([a / "summary.json", b / "summary.json"], tmp_path / "cmp.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sim_main(["eval", "--compare", str(a / "summary.json"), str(b / "summary.json"),
                     "--out", str(tmp_path / "cli.png")]) == 0
    assert (tmp_path / "cli.png").is_file()
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(EvalError, match="summary.json"):
        compare([tmp_path / "bad.json"], tmp_path / "x.png")


def test_cli_list_and_errors(capsys):
    assert sim_main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert {"widowx-block-in-bowl", "widowx-push-left", "widowx-pick-block"} <= set(names)
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)
    assert sim_main(["eval", "widowx-pick-blok", "--policy", "x"]) == 1
    assert "did you mean 'widowx-pick-block'" in capsys.readouterr().err
    assert sim_main(["eval", TASK]) == 1
    assert "--policy" in capsys.readouterr().err
    assert sim_main(["eval", TASK, "--policy", "/no/such/folder"]) == 1
    assert "neither a checkpoint folder" in capsys.readouterr().err



def test_grid_video_tiles_the_episodes(tmp_path):
    import imageio.v3 as iio

    class Still:
        def act(self, obs, instruction):
            return np.array([0, 0, 0, 0, 0, 0, 1.0])

    cfg = EvalConfig(TASK, tmp_path, episodes=3, max_steps=2, image_size=32, video="grid")
    summary = evaluate(cfg, Still(), "still")
    assert {e["video"] for e in summary["per_episode"]} == {"rollouts.mp4"}
    frames = list(iio.imiter(tmp_path / "rollouts.mp4", plugin="pyav"))
    assert len(frames) == 3 and frames[0].shape == (64, 64, 3)  # 2 x 2 tiles of 32 px, one blank
    assert frames[0][32:, 32:].max() < 20 and frames[0][:32, :32].std() > 10


def test_policy_errors_are_said_and_an_all_error_run_refused(tmp_path):
    from sim.evaluate import format_summary

    class FailsFirstEpisode:
        episode = -1

        def reset(self):
            self.episode += 1

        def act(self, obs, instruction):
            if self.episode == 0:
                raise KeyError("no statistics 'bridge'")
            return np.array([0, 0, 0, 0, 0, 0, 1.0])

    cfg = EvalConfig(TASK, tmp_path / "some", episodes=2, max_steps=2, image_size=32, video="none")
    summary = evaluate(cfg, FailsFirstEpisode(), "flaky")
    assert summary["policy_errors"] == 1 and summary["episodes"] == 2 and summary["success_rate"] == 0.0
    assert "WARNING: 1 of 2 episodes stopped because the policy raised" in format_summary(summary, tmp_path)
    assert "no statistics 'bridge'" in format_summary(summary, tmp_path)

    class AlwaysFails:
        def act(self, obs, instruction):
            raise ValueError("pass unnorm_key= one of ['a', 'b']")

    cfg = EvalConfig(TASK, tmp_path / "all", episodes=2, max_steps=2, image_size=32, video="none")
    with pytest.raises(EvalError, match=r"raised in every episode.*unnorm_key= one of"):
        evaluate(cfg, AlwaysFails(), "broken")
    assert json.loads((tmp_path / "all" / "summary.json").read_text())["policy_errors"] == 2
