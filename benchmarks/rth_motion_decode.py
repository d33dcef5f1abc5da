"""RT-H motion decoding held to the motion grammar (`vla.rth.grammar`) against free-text decoding.

1. Passes on the real Bridge shards (../shared/real): each step is labelled as `vla rth label` does;
   for its motion, the forward passes a free decode takes (one per token, EOS included) against a
   grammar decode (forced tokens fed with the chosen one, the joiner fed speculatively). The
   look-ahead batch takes max(7, motion passes): the action query's 7 tokens are 7 passes.
2. CPU timing on a trained tiny RT-H and flat pair (`benchmarks/rth_interventions.py --out DIR`
   saves them in DIR/models): on held-out demo frames, flat `predict_action`, the look-ahead with
   free and with held motion decoding, called in turn; p50 ms, ratio to flat, passes, and whether
   the two motion decodes agree. A tiny model's CPU step is bound by per-call overhead, as a 7B
   step on a GPU is by kernel launches, so passes are what costs in both.

    .venv/bin/python benchmarks/rth_motion_decode.py --rth-dir /tmp/rth_bench [--frames 200] [--json out.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import statistics
import tempfile
import time

import numpy as np
import torch

import vla
from vla.model.normalization import statistics_from_arrays
from vla.rth.grammar import MotionCursor, MotionGrammar
from vla.rth.label import label_dataset
from vla.rth.motions import STOP, word_table
from vla.rth.query import MAX_MOTION_TOKENS, predict_lookahead, rth_info, set_rth_info
from vla.rth.train import MotionEpisode, TrainSettings, read_motion_episodes, train_policy

from gpu_7b_queries import interleaved
from rth_interventions import split

REAL = pathlib.Path(__file__).resolve().parents[2] / "shared" / "real"
ACTION_TOKENS = 7
KEY = "widowx"
TASKS = ("sim_widowx_push_left_rth", "sim_widowx_pick_block_rth")
INSTRUCTION = "put the spoon on the towel"


def grammar_passes(grammar: MotionGrammar, target: list[int]) -> int:
    """Forward passes (prefill included) of a grammar decode whose choices give `target` (+ EOS).

    Every choice reads the logits of one pass, except the choice right after a speculated joiner:
    the pass that fed the joiner also gave the logits after it (unless forced tokens followed it)."""
    cursor, passes, free_ride = MotionCursor(grammar), 0, False
    while not cursor.done:
        token = target[len(cursor.tokens)]
        passes += not free_ride
        speculated = cursor.speculation()
        new = cursor.take(token)
        free_ride = bool(speculated) and token == grammar.joiner[0] and len(new) == len(speculated)
    return passes


def bridge_passes(data: pathlib.Path, tokenizer) -> tuple[dict, dict[str, int]]:
    """Free vs grammar passes for every labelled step of the real Bridge shards, and the vocabulary."""
    with tempfile.TemporaryDirectory() as tmp:
        counts = dict(label_dataset("bridge_dataset", data, pathlib.Path(tmp)).counts)
    grammar = MotionGrammar.from_vocabulary(list(counts), lambda t: encode(tokenizer, t), tokenizer.eos_id,
                                            MAX_MOTION_TOKENS, word_table(None))
    if grammar is None:
        raise SystemExit("the Bridge vocabulary does not tokenize phrase by phrase; no grammar to measure")
    free, held, weights = [], [], []
    for motion, n in counts.items():
        target = encode(tokenizer, motion) + [tokenizer.eos_id]
        free.append(len(target))
        held.append(grammar_passes(grammar, target))
        weights.append(n)
    w = np.asarray(weights, float)
    look_free = [max(ACTION_TOKENS, f) / ACTION_TOKENS for f in free]
    look_held = [max(ACTION_TOKENS, h) / ACTION_TOKENS for h in held]
    return {"steps": int(w.sum()), "motions": len(free),
            "free_passes": {"p50": weighted_pct(free, w, 0.5), "p90": weighted_pct(free, w, 0.9), "max": max(free)},
            "grammar_passes": {"p50": weighted_pct(held, w, 0.5), "p90": weighted_pct(held, w, 0.9),
                               "max": max(held)},
            "lookahead_passes_over_flat_mean": {"free": float(np.average(look_free, weights=w)),
                                               "grammar": float(np.average(look_held, weights=w))},
            "steps_within_flat_passes": {"free": float(w[np.asarray(free) <= ACTION_TOKENS].sum() / w.sum()),
                                         "grammar": float(w[np.asarray(held) <= ACTION_TOKENS].sum() / w.sum())}
            }, counts


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.tokenizer.encode(text, add_special_tokens=False).ids


def weighted_pct(values, weights, q: float):
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(np.asarray(weights, float)[order]) / np.sum(weights)
    return np.asarray(values)[order][np.searchsorted(cum, q)].item()


def trained_lengths(counts: dict[str, int], calls: int) -> dict:
    """A tiny RT-H taught to answer Bridge's median, p90 and longest motion (one colour each), timed:
    flat `predict_action` vs the look-ahead with free and with grammar decoding."""
    tokenizer = vla.OpenVLA.from_preset("tiny", seed=0).processor.tokenizer
    motions = list(counts)
    lengths = [len(encode(tokenizer, m)) + 1 for m in motions]
    weights = [counts[m] for m in motions]
    chosen = {}
    for label, q in (("p50", 0.5), ("p90", 0.9), ("max", 1.0)):
        n = weighted_pct(lengths, weights, q) if q < 1 else max(lengths)
        chosen[label] = max((m for m, length in zip(motions, lengths) if length == n), key=counts.get)
    colours = np.array([[220, 40, 40], [40, 200, 40], [40, 60, 220]], np.uint8)
    rng = np.random.default_rng(0)
    episodes = []
    for e in range(12):
        k = e % 3
        frames = np.clip(colours[k].astype(int) + rng.integers(-10, 11, (4, 64, 64, 3)), 0, 255).astype(np.uint8)
        action = np.zeros((4, 7), np.float32)
        action[:, k] = 0.02
        action[:, 6] = float(k != 1)
        episodes.append(MotionEpisode(frames, action, INSTRUCTION, (list(chosen.values())[k],) * 4))
    stats = statistics_from_arrays(np.concatenate([e.actions for e in episodes]), mask=[True] * 6 + [False])
    rth = vla.OpenVLA.from_preset("tiny", norm_stats={KEY: stats}, seed=0)
    train_policy(rth, episodes, TrainSettings(steps=300, batch_size=12, lr=5e-3, mix=0.5, seed=0), KEY)
    info = rth_info(rth)
    set_rth_info(rth, dataclasses.replace(info, vocabulary=tuple(sorted(set(motions) | set(info.vocabulary)))))
    flat = vla.OpenVLA.from_preset("tiny", norm_stats={KEY: stats}, seed=0)
    calls_seen = count_passes(rth)
    out = {}
    for k, (label, motion) in enumerate(chosen.items()):
        image = colours[k][None, None].repeat(64, 0).repeat(64, 1)
        said = {}
        for free in (True, False):
            calls_seen.clear()
            said[free] = predict_lookahead(rth, [image], [INSTRUCTION], [STOP], KEY, free_text=free)[1][0]
            said[f"passes_{free}"] = len(calls_seen)
        times = interleaved({
            "flat": lambda: flat.predict_action(image, INSTRUCTION, unnorm_key=KEY),
            "lookahead_free": lambda: predict_lookahead(rth, [image], [INSTRUCTION], [STOP], KEY, free_text=True),
            "lookahead_grammar": lambda: predict_lookahead(rth, [image], [INSTRUCTION], [STOP], KEY)},
            calls, torch.device("cpu"))
        p50 = {k2: v["p50_ms"] for k2, v in times.items()}
        out[label] = {"motion": motion, "tokens_with_eos": len(encode(tokenizer, motion)) + 1,
                      "said_free": said[True], "said_grammar": said[False],
                      "passes": {"lookahead_free": said["passes_True"], "lookahead_grammar": said["passes_False"]},
                      "p50_ms": p50, "ratio_to_flat": {k2: p50[k2] / p50["flat"] for k2 in p50 if k2 != "flat"}}
    return out


def count_passes(model) -> list[int]:
    calls: list[int] = []
    model.language_model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def cpu_timing(rth_dir: pathlib.Path, frames: int) -> dict:
    """Flat vs look-ahead (free / grammar) on held-out frames of the benchmark's demos, called in turn."""
    flat = vla.OpenVLA.from_pretrained(rth_dir / "models" / "flat")
    rth = vla.OpenVLA.from_pretrained(rth_dir / "models" / "rth")
    obs = []
    for name in TASKS:
        for ep in split(read_motion_episodes(name, rth_dir))[1]:  # the benchmark's held-out demos
            obs += [(ep.images[t], ep.instruction, ep.motions[max(t - 1, 0)]) for t in range(len(ep.motions))]
    picks = np.random.default_rng(0).choice(len(obs), size=min(frames, len(obs)), replace=False)
    obs = [obs[i] for i in picks]
    calls = count_passes(rth)
    times = {"flat": [], "lookahead_free": [], "lookahead_grammar": []}
    passes = {"lookahead_free": [], "lookahead_grammar": []}
    agree, oov_free = 0, 0
    vocabulary = set(rth_info(rth).vocabulary)
    for i, (image, instruction, previous) in enumerate(obs):
        out = {}
        for name in (("flat", "lookahead_free", "lookahead_grammar") if i % 2 else
                     ("lookahead_grammar", "lookahead_free", "flat")):
            calls.clear()
            t0 = time.perf_counter()
            if name == "flat":
                flat.predict_action(image, instruction, unnorm_key=KEY)
            else:
                out[name] = predict_lookahead(rth, [image], [instruction], [previous], KEY,
                                              free_text=name == "lookahead_free")[1][0]
                passes[name].append(len(calls))
            times[name].append(1e3 * (time.perf_counter() - t0))
        agree += out["lookahead_free"] == out["lookahead_grammar"]
        oov_free += out["lookahead_free"] not in vocabulary
    p50 = {k: statistics.median(v) for k, v in times.items()}
    return {"frames": len(obs), "p50_ms": p50,
            "ratio_to_flat": {k: p50[k] / p50["flat"] for k in passes},
            "mean_passes": {k: float(np.mean(v)) for k, v in passes.items()},
            "motion_agreement": agree / len(obs), "free_answers_out_of_vocabulary": oov_free / len(obs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rth-dir", type=pathlib.Path, help="an `rth_interventions.py --out` folder")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--calls", type=int, default=50, help="timed calls per variant and motion length")
    parser.add_argument("--real", type=pathlib.Path, default=REAL)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {}
    if (args.real / "bridge_dataset").is_dir():
        tokenizer = vla.OpenVLA.from_preset("tiny", seed=0).processor.tokenizer
        b, counts = bridge_passes(args.real, tokenizer)
        result["bridge"] = b
        print(f"Bridge ({b['steps']} steps, {b['motions']} motions): passes free p50/p90/max "
              f"{b['free_passes']['p50']}/{b['free_passes']['p90']}/{b['free_passes']['max']}, grammar "
              f"{b['grammar_passes']['p50']}/{b['grammar_passes']['p90']}/{b['grammar_passes']['max']}; look-ahead "
              f"passes / flat's 7, step-weighted mean: free {b['lookahead_passes_over_flat_mean']['free']:.2f}x, "
              f"grammar {b['lookahead_passes_over_flat_mean']['grammar']:.2f}x; steps within 7 passes: free "
              f"{b['steps_within_flat_passes']['free']:.0%}, grammar {b['steps_within_flat_passes']['grammar']:.0%}")
        result["trained_lengths"] = t = trained_lengths(counts, args.calls)
        for label, r in t.items():
            print(f"CPU, tiny taught Bridge's {label} motion {r['motion']!r} ({r['tokens_with_eos']} tokens; said "
                  f"free {r['said_free']!r}, grammar {r['said_grammar']!r}): p50 flat {r['p50_ms']['flat']:.1f} ms, "
                  f"look-ahead free {r['p50_ms']['lookahead_free']:.1f} ms ({r['ratio_to_flat']['lookahead_free']:.2f}x, "
                  f"{r['passes']['lookahead_free']} passes), grammar {r['p50_ms']['lookahead_grammar']:.1f} ms "
                  f"({r['ratio_to_flat']['lookahead_grammar']:.2f}x, {r['passes']['lookahead_grammar']} passes)")
    else:
        print(f"no Bridge shards at {args.real}; skipping the pass counts and the timing by motion length")
    if args.rth_dir is not None:
        if not (args.rth_dir / "models" / "rth" / "config.json").is_file():
            raise SystemExit(f"{args.rth_dir} has no models/rth; run benchmarks/rth_interventions.py --out "
                             f"{args.rth_dir} first")
        result["cpu"] = c = cpu_timing(args.rth_dir, args.frames)
        print(f"CPU, tiny, {c['frames']} held-out frames, p50 ms: flat {c['p50_ms']['flat']:.1f}, look-ahead free "
              f"{c['p50_ms']['lookahead_free']:.1f} ({c['ratio_to_flat']['lookahead_free']:.2f}x, "
              f"{c['mean_passes']['lookahead_free']:.1f} passes), look-ahead grammar "
              f"{c['p50_ms']['lookahead_grammar']:.1f} ({c['ratio_to_flat']['lookahead_grammar']:.2f}x, "
              f"{c['mean_passes']['lookahead_grammar']:.1f} passes); motions agree on "
              f"{c['motion_agreement']:.1%}, free answers out of vocabulary {c['free_answers_out_of_vocabulary']:.1%}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
