"""Statistics (OpenVLA's recipe, cached by content hash) and normalization to [-1, 1]."""
from __future__ import annotations

import json
import shutil

import numpy as np

from vla.data.registry import load_registry, parse_entry, Registry
from vla.data.rlds_writer import Episode, write_rlds
from vla.data.statistics import cache_path, compute_statistics
from vla.data.rlds import open_dataset


def test_real_bridge_statistics_agree_with_independent_numpy(shared_dir):
    ref = json.loads((shared_dir / "real" / "bridge_dataset.stats.json").read_text())["train"]
    stats = compute_statistics("bridge_dataset", shared_dir / "real")  # read-only: computed, not cached
    assert stats["num_transitions"] == ref["num_transitions"] == 250
    assert stats["num_trajectories"] == ref["num_trajectories"] == 25
    for key in ("mean", "std", "min", "max", "q01", "q99"):
        np.testing.assert_allclose(stats["action"][key], ref["action"][key], rtol=1e-5, atol=1e-7, err_msg=key)
    for key in ("mean", "q01", "q99"):
        np.testing.assert_allclose(stats["proprio"][key], ref["proprio"][key], rtol=1e-5, atol=1e-7, err_msg=key)
    assert stats["action"]["mask"] == [True] * 6 + [False]
    assert not list((shared_dir / "real" / "bridge_dataset" / "1.0.0").glob("vla_statistics*")), \
        "read-only shared data must not receive a cache file"


def _native_dataset(tmp_path, n=3, steps=20):
    rng = np.random.default_rng(0)
    eps = [Episode({"primary": np.zeros((steps, 8, 8, 3), np.uint8)}, rng.normal(size=(steps, 26)).astype(np.float32),
                   rng.normal(size=(steps, 26)).astype(np.float32), "wave") for _ in range(n)]
    write_rlds(tmp_path, "humanoid", eps)
    return eps


def test_native_statistics_cached_and_keyed_by_content(tmp_path):
    eps = _native_dataset(tmp_path)
    stats = compute_statistics("humanoid", tmp_path)
    actions = np.concatenate([e.action for e in eps])
    np.testing.assert_allclose(stats["action"]["q01"], np.quantile(actions, 0.01, axis=0), rtol=1e-6)
    assert len(stats["action"]["mask"]) == 26 and all(stats["action"]["mask"])
    assert len(stats["proprio"]["q99"]) == 26 and stats["num_transitions"] == 60
    path = cache_path(open_dataset("humanoid", tmp_path), "train")
    assert path.is_file()
    # a doctored cache proves reuse; a rewritten dataset changes the key
    path.write_text(json.dumps({**stats, "num_transitions": -1}))
    assert compute_statistics("humanoid", tmp_path)["num_transitions"] == -1
    shutil.rmtree(tmp_path / "humanoid")
    _native_dataset(tmp_path, n=2)
    assert compute_statistics("humanoid", tmp_path)["num_transitions"] == 40


def test_editing_the_entry_changes_the_cache_key(tmp_path, shared_dir):
    shutil.copytree(shared_dir / "real" / "bridge_dataset", tmp_path / "bridge_dataset")
    for p in (tmp_path / "bridge_dataset").rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    registry = load_registry()
    a = cache_path(open_dataset("bridge_dataset", tmp_path, registry), "train")
    table = dict(registry.get("bridge_dataset").raw)
    edited = Registry(registry.path, {**registry.entries,
                                      "bridge_dataset": parse_entry("bridge_dataset", {**table, "control_hz": 10})})
    b = cache_path(open_dataset("bridge_dataset", tmp_path, edited), "train")
    assert a != b
