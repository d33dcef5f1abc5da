"""openvla-7b on one GPU: RT-H query latency (#12) and the cost of a second camera and the VIB (#13).

Random weights (no hub access here); the layers, shapes, image pipeline and decode loops are the
real ones, so latency and memory are what a trained openvla-7b folder costs. Prints the median of
`--calls` after warm-up; the variants compared are called in turn (A B C A B C ...):

RT-H, one observation per call, against the flat policy's `predict_action` (7 action tokens):
  sequential  motion query, then the action query with that motion (two prefills, two vision passes)
  look-ahead  one batched call: action query with the previous step's motion + next motion query
              (one vision pass; decodes max(7, motion length) steps). Target <= 1.2x flat.
A random model never says EOS, so the motion answer's length is set through the free-text decoder's cap
(`vla.rth.query.MAX_MOTION_TOKENS`): by default the median, p90 and longest answer of our labeller on
the real Bridge shards in ../shared/real (5, 12 and 17 tokens with EOS; 63 motions over 250 steps).
These variants decode free text. The grammar decode that RT-H checkpoints use by default takes
fewer passes for the same answers (3, 6 and 9: benchmarks/rth_motion_decode.py); to time it, the
vocabulary head alone is taught each of those three Bridge motions in turn (`--grammar-teach-steps`,
the trunk stays random), then flat, look-ahead free and look-ahead grammar are called in turn. What
the model said and how many passes each call took are printed with the times.

Cameras: `predict_action` latency, prefill length and peak memory for image roles [primary] and
[primary, wrist], the latter also with the VIB on primary; then one LoRA training step (rank 32,
all linear layers, AdamW, batch --batch) for each, the VIB adding its KL term. Results of one run:
benchmarks/results/gpu_7b_queries.json.

    python benchmarks/gpu_7b_queries.py [--calls 20] [--json out.json]
    python benchmarks/gpu_7b_queries.py --preset tiny --device cpu --calls 3   # smoke run on a CPU
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import time
from collections.abc import Callable

import numpy as np
import torch

import vla
import vla.rth.query as rth_query
from vla.model.multi_image import set_image_roles
from vla.model.openvla import RTH_CONFIG_KEY
from vla.model.normalization import statistics_from_arrays
from vla.rth.motions import DEFAULT_WORDS
from vla.rth.query import RTHInfo, predict_actions_given, predict_lookahead, predict_motions, set_rth_info
from vla.train.config import FinetuneConfig
from vla.train.modes import set_trainable
from vla.train.step import ActionLoss

WARMUP = 3
INSTRUCTION = "put the spoon on the towel"
MOTION = "move arm forward"  # the previous step's motion fed to the action query


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(variants: dict[str, Callable[[], None]], calls: int, device: torch.device,
                setup: Callable[[str], None] = lambda name: None) -> dict[str, dict[str, float]]:
    """p50 / p90 wall ms and peak memory (GiB) of each variant, called in turn (A B C A B C ...).

    Called in turn, a drift of clocks or host load hits every variant alike (one run that timed the
    variants one after another measured the same flat call at 220 and 162 ms). `setup(name)` runs
    before each call, untimed."""
    for _ in range(WARMUP):
        for name, fn in variants.items():
            setup(name)
            fn()
    ms: dict[str, list[float]] = {name: [] for name in variants}
    peak = dict.fromkeys(variants, 0.0)
    for _ in range(calls):
        for name, fn in variants.items():
            setup(name)
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            fn()
            sync(device)
            ms[name].append((time.perf_counter() - t0) * 1e3)
            if device.type == "cuda":
                peak[name] = max(peak[name], torch.cuda.max_memory_allocated() / 2**30)
    return {name: {"p50_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)),
                   "peak_gib": peak[name] if device.type == "cuda" else float("nan")} for name, v in ms.items()}


def motion_tokens_decoded(model: vla.OpenVLA, image: np.ndarray) -> int:
    """How many tokens the motion query actually decodes (checks that the cap sets the length)."""
    tok = model.processor.tokenizer
    patches = rth_query._patches(model, [image])
    out = rth_query.greedy_decode(model, patches, [rth_query.motion_prompt_ids(tok, INSTRUCTION)], [False], 0)
    return len(out[0])


def rth_latency(model: vla.OpenVLA, image: np.ndarray, lengths: list[int], calls: int,
                device: torch.device) -> dict:
    """Flat vs sequential vs look-ahead, per motion answer length, all interleaved."""
    set_rth_info(model, RTHInfo.new([MOTION, "stop"], [INSTRUCTION], lookahead=1, mix=0.5))
    # predict_actions is the flat decode (predict_action on an RT-H checkpoint would run the motion query)
    variants: dict[str, Callable[[], None]] = {"flat": lambda: model.predict_actions([image], [INSTRUCTION])}
    caps: dict[str, int] = {"flat": rth_query.MAX_MOTION_TOKENS}
    decoded = {}
    cap = rth_query.MAX_MOTION_TOKENS
    try:
        for n in lengths:
            rth_query.MAX_MOTION_TOKENS = n
            decoded[n] = motion_tokens_decoded(model, image)

            def sequential() -> None:
                motion = predict_motions(model, [image], [INSTRUCTION], free_text=True)[0]
                predict_actions_given(model, [image], [INSTRUCTION], [motion])

            variants[f"sequential {n}"] = sequential
            variants[f"lookahead {n}"] = lambda: predict_lookahead(model, [image], [INSTRUCTION], [MOTION],
                                                                   free_text=True)
            caps[f"sequential {n}"] = caps[f"lookahead {n}"] = n
        times = interleaved(variants, calls, device, setup=lambda name: setattr(rth_query, "MAX_MOTION_TOKENS",
                                                                                 caps[name]))
    finally:
        rth_query.MAX_MOTION_TOKENS = cap
    flat = times["flat"]
    print(f"\nRT-H queries (one observation): flat p50 {flat['p50_ms']:.1f} ms (p90 {flat['p90_ms']:.1f})")
    rows = {"flat": flat, "by_motion_tokens": {}}
    for n in lengths:
        seq, look = times[f"sequential {n}"], times[f"lookahead {n}"]
        rows["by_motion_tokens"][n] = {"decoded": decoded[n], "sequential": seq, "lookahead": look,
                                       "sequential_over_flat": seq["p50_ms"] / flat["p50_ms"],
                                       "lookahead_over_flat": look["p50_ms"] / flat["p50_ms"]}
        print(f"  motion {n:2d} tokens (decoded {decoded[n]}): sequential {seq['p50_ms']:7.1f} ms "
              f"({seq['p50_ms'] / flat['p50_ms']:.2f}x flat), look-ahead {look['p50_ms']:7.1f} ms "
              f"({look['p50_ms'] / flat['p50_ms']:.2f}x flat; target <= 1.2x)")
    return rows


# our labeller's median, p90 and longest motion on the real Bridge shards (5, 12, 17 tokens with EOS);
# benchmarks/rth_motion_decode.py picks them (the device has no shards or TensorFlow)
BRIDGE_MOTIONS = {"p50": "close gripper",
                  "p90": "rotate arm right and move arm forward and move arm right",
                  "max": "move arm right and move arm down and move arm backward and roll arm left"}
def teach_motion(model: vla.OpenVLA, image: np.ndarray, motion: str, steps: int) -> float:
    """Train the vocabulary head alone (the trunk stays random) until the motion query answers
    `motion`: a random model never ends an answer, and a grammar decode's passes depend on which
    phrases it picks, so the answer is taught rather than capped. Returns the last loss."""
    head = model.language_model.lm_head.weight
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    head.requires_grad_(True)
    pixels = model.processor.process_images([image]).to(model.device, next(model.parameters()).dtype)
    batch = rth_query.encode_samples(model.processor, [rth_query.Sample(INSTRUCTION, motion)])
    opt = torch.optim.Adam([head], lr=3e-3)
    try:
        for _ in range(steps):
            loss = rth_query.weighted_loss(model, pixels, batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    finally:
        head.requires_grad_(False)
        for p in trainable:
            p.requires_grad_(True)
    return float(loss.detach())


def grammar_latency(model: vla.OpenVLA, image: np.ndarray, calls: int, device: torch.device, steps: int) -> dict:
    """Flat vs look-ahead with free and with grammar motion decoding, per Bridge motion taught to the head."""
    vocabulary = [p for pair in DEFAULT_WORDS.values() for p in pair] + ["stop"]  # every default phrase
    set_rth_info(model, RTHInfo.new([*vocabulary, *BRIDGE_MOTIONS.values()], [INSTRUCTION], lookahead=1, mix=0.5))
    saved = model.language_model.lm_head.weight.detach().clone()
    rows = {}
    try:
        for label, motion in BRIDGE_MOTIONS.items():
            with torch.no_grad():
                model.language_model.lm_head.weight.copy_(saved)
            loss = teach_motion(model, image, motion, steps)
            variants: dict[str, Callable[[], None]] = {"flat": lambda: model.predict_actions([image], [INSTRUCTION])}
            row = {"motion": motion, "teach_loss": loss}
            for mode in ("free", "grammar"):
                call = (lambda free=mode == "free":
                        predict_lookahead(model, [image], [INSTRUCTION], [MOTION], free_text=free))
                passes: list[int] = []
                hook = model.language_model.register_forward_pre_hook(lambda *_: passes.append(1))
                try:
                    said = call()[1][0]
                finally:
                    hook.remove()
                row[mode] = {"said": said, "passes": len(passes)}
                variants[f"lookahead {mode}"] = call
            times = interleaved(variants, calls, device)
            row["flat_p50_ms"] = flat = times["flat"]["p50_ms"]
            for mode in ("free", "grammar"):
                row[mode].update(p50_ms=times[f"lookahead {mode}"]["p50_ms"],
                                 over_flat=times[f"lookahead {mode}"]["p50_ms"] / flat)
            rows[label] = row

            def told(r: dict) -> str:
                return "as taught" if r["said"] == motion else repr(r["said"])

            print(f"  {label} {motion!r} (head loss {loss:.3f}): flat {flat:.1f} ms; look-ahead free "
                  f"{row['free']['p50_ms']:.1f} ms ({row['free']['over_flat']:.2f}x, {row['free']['passes']} passes, "
                  f"said {told(row['free'])}), grammar {row['grammar']['p50_ms']:.1f} ms "
                  f"({row['grammar']['over_flat']:.2f}x, {row['grammar']['passes']} passes, said {told(row['grammar'])})")
    finally:
        with torch.no_grad():
            model.language_model.lm_head.weight.copy_(saved)
    return rows


RIGS = {"primary": (("primary",), ()), "primary+wrist": (("primary", "wrist"), ()),
        "primary+wrist, VIB on primary": (("primary", "wrist"), ("primary",))}


def camera_cost(model: vla.OpenVLA, image: np.ndarray, calls: int, batch: int, steps: int,
                device: torch.device) -> dict:
    """Inference, then one LoRA training step, per camera set: same weights, interleaved."""
    flat_extra = {k: v for k, v in model.config.extra.items() if k != RTH_CONFIG_KEY}
    model.config = dataclasses.replace(model.config, extra=flat_extra)  # a flat checkpoint again (no RT-H record)
    weights = torch.cuda.memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    print(f"\nCameras (weights resident: {weights:.2f} GiB)")
    rigs = {}  # rig -> (config, role modules): what set_image_roles sets, kept so the rigs can take turns
    for rig, (roles, vib) in RIGS.items():
        set_image_roles(model, roles, vib, 1e-3 if vib else 0.0)
        rigs[rig] = (model.config, model.role_tokens)

    def use(rig: str) -> None:
        model.config, model.role_tokens = rigs[rig]

    prompt = model.processor.encode_prompts([INSTRUCTION])["input_ids"].shape[1]
    rows: dict = {}
    for rig, (roles, _) in RIGS.items():
        use(rig)
        with torch.no_grad():
            patches = model.embed_images(torch.cat([model.processor.process_images([image])] * len(roles), dim=1))
        rows[rig] = {"prefill_tokens": int(prompt + patches.shape[1])}
    inference = interleaved({rig: (lambda roles=roles: model.predict_action(
        images={r: image for r in roles}, instruction=INSTRUCTION)) for rig, (roles, _) in RIGS.items()},
        calls, device, setup=use)
    set_trainable(model, FinetuneConfig(base="openvla-7b", out=pathlib.Path("unused"),
                                        data_dir=pathlib.Path("unused"), dataset="x", mode="lora"))
    rng = np.random.default_rng(0)
    enc = {k: v.to(device) for k, v in
           model.processor.encode_training([INSTRUCTION] * batch, rng.uniform(-1, 1, (batch, 7))).items()}
    lm = ActionLoss(model).train()
    lora = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("role_tokens.")]
    steps_by_rig = {}
    for rig, (roles, _) in RIGS.items():
        role_params = [] if rigs[rig][1] is None else list(rigs[rig][1].requires_grad_(True).parameters())
        opt = torch.optim.AdamW(lora + role_params, lr=1e-4)  # role modules: new per run, trained in full
        pixels = torch.cat([model.processor.process_images([image] * batch) for _ in roles], dim=1).to(device)

        def step(opt=opt, pixels=pixels) -> None:
            loss = lm(**enc, pixel_values=pixels)[0]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        steps_by_rig[rig] = step
    training = interleaved(steps_by_rig, steps, device, setup=use)
    model.eval()
    for rig in RIGS:
        rows[rig]["predict_action"], rows[rig]["lora_step"] = inference[rig], training[rig]
        print(f"  {rig:30s} prefill {rows[rig]['prefill_tokens']:4d} tokens: predict_action p50 "
              f"{inference[rig]['p50_ms']:7.1f} ms, peak {inference[rig]['peak_gib']:6.2f} GiB | LoRA step "
              f"(batch {batch}) p50 {training[rig]['p50_ms']:7.1f} ms, peak {training[rig]['peak_gib']:6.2f} GiB")
    base, two, vib = (rows[r] for r in RIGS)
    for what in ("predict_action", "lora_step"):
        print(f"  {what}: two cameras / one {two[what]['p50_ms'] / base[what]['p50_ms']:.2f}x time, "
              f"+{two[what]['peak_gib'] - base[what]['peak_gib']:.2f} GiB; VIB / no VIB "
              f"{vib[what]['p50_ms'] / two[what]['p50_ms']:.3f}x time, "
              f"{vib[what]['peak_gib'] - two[what]['peak_gib']:+.3f} GiB")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="openvla-7b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--batch", type=int, default=8, help="training batch of the LoRA step")
    p.add_argument("--steps", type=int, default=10, help="timed LoRA steps per camera set")
    p.add_argument("--repeat", type=int, default=2, help="time the RT-H queries this many times (the spread)")
    p.add_argument("--motion-tokens", default="5,12,17",
                   help="motion answer lengths (with EOS) to time; default: median, p90, max on real Bridge")
    p.add_argument("--grammar-teach-steps", type=int, default=100,
                   help="head-only steps that teach the Bridge motions before timing the grammar decode (0: skip)")
    p.add_argument("--json", type=pathlib.Path, help="also write the figures here")
    args = p.parse_args()
    device = torch.device(args.device)
    # a random model never ends its motion answer; the decoder warns about that at every call
    logging.getLogger(rth_query.__name__).setLevel(logging.ERROR)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible; use --device cpu --preset tiny for a smoke run")
    rng = np.random.default_rng(0)
    stats = {"bench": statistics_from_arrays(rng.normal(scale=0.05, size=(1000, 7)), mask=[True] * 6 + [False])}
    t0 = time.perf_counter()
    model = vla.OpenVLA.from_preset(args.preset, norm_stats=stats, device=device)
    sync(device)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"{args.preset} (random weights, {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, "
          f"{next(model.parameters()).dtype}) on {name}: built in {time.perf_counter() - t0:.0f} s; torch {torch.__version__}; "
          f"median of {args.calls} calls after {WARMUP} warm-up")
    image = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    out = {"preset": args.preset, "device": name, "torch": torch.__version__, "calls": args.calls,
           "rth": [rth_latency(model, image, [int(n) for n in args.motion_tokens.split(",")], args.calls, device)
                   for _ in range(args.repeat)]}
    if args.grammar_teach_steps:
        print("\nRT-H look-ahead, free vs grammar motion decoding (answers taught to the head):")
        out["rth_grammar"] = grammar_latency(model, image, args.calls, device, args.grammar_teach_steps)
    out["cameras"] = camera_cost(model, image, args.calls, args.batch, args.steps, device)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
