"""predict_action latency on CPU: ours (one prefill + KV-cache greedy steps) vs transformers generate().

Both paths run the same model, image processing and prompt; the peer decodes with
`LlamaForCausalLM.generate(inputs_embeds=..., max_new_tokens=n, do_sample=False)` in the same process.
PERFORMANCE.md's figure for the original OpenVLA code on the reference checkpoint (32 ms p50,
2 threads) is printed with our ratio against it. Usage:

    .venv/bin/python benchmarks/predict_action.py [--calls 50] [--threads 2] [--gpu-7b]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import time

import numpy as np
import torch
import transformers
from PIL import Image

import vla
from vla.model.normalization import select_stats, statistics_from_arrays, unnormalize_actions

REFERENCE = pathlib.Path(os.environ.get("VLA_SHARED", pathlib.Path(__file__).resolve().parents[2] / "shared")) \
    / "reference" / "openvla-tiny"
ORIGINAL_P50_MS = 32.0  # PERFORMANCE.md: original OpenVLA HF code on reference/openvla-tiny, 2 CPU threads
WARMUP = 5


class ActionTokensOnly(transformers.LogitsProcessor):
    """Restrict generate() to the action-token ids, as our decode does."""

    def __init__(self, model: vla.OpenVLA) -> None:
        self.first, self.last = model.action_tokenizer.first_id, model.action_tokenizer.last_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        masked = torch.full_like(scores, float("-inf"))
        masked[:, self.first: self.last + 1] = scores[:, self.first: self.last + 1]
        return masked


def generate_peer(model: vla.OpenVLA, images: list, instructions: list[str], unnorm_key: str | None) -> np.ndarray:
    """The same prediction, decoded by transformers' generate() instead of our loop."""
    _, stats = select_stats(model.norm_stats, unnorm_key)
    with torch.inference_mode():
        pixel_values = model.processor.process_images(images)
        prompts = model.processor.encode_prompts(instructions)
        embeds, mask = model._prefill_inputs(prompts["input_ids"].to(model.device),
                                             prompts["attention_mask"].to(model.device), model.embed_images(pixel_values))
        out = model.language_model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=stats.dim,
                                            min_new_tokens=stats.dim, do_sample=False,
                                            pad_token_id=model.processor.tokenizer.pad_id,
                                            logits_processor=transformers.LogitsProcessorList([ActionTokensOnly(model)]))
    tokens = out[:, -stats.dim:].cpu().numpy()
    return unnormalize_actions(model.action_tokenizer.decode(tokens), stats)


def timed(fn, calls: int) -> tuple[float, float, float]:
    """Median and p90 wall latency, and median process CPU time, in ms over `calls` after warm-up.

    CPU time (all threads) is printed too because a shared 2-core machine under load stretches
    wall time by whatever else runs; with --threads 1 it approximates an idle machine's latency.
    """
    for _ in range(WARMUP):
        fn()
    wall, cpu = [], []
    for _ in range(calls):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    ms = np.array(wall) * 1e3
    return float(np.median(ms)), float(np.percentile(ms, 90)), float(np.median(cpu) * 1e3)


def bench(name: str, model: vla.OpenVLA, image, instruction: str, key: str | None, calls: int) -> None:
    ours_action = model.predict_action(image, instruction, key)
    peer_action = generate_peer(model, [image], [instruction], key)[0]
    same = np.array_equal(ours_action, peer_action)
    rows = {
        "ours    x1": timed(lambda: model.predict_action(image, instruction, key), calls),
        "generate x1": timed(lambda: generate_peer(model, [image], [instruction], key), calls),
        "ours    x8": timed(lambda: model.predict_actions([image] * 8, [instruction] * 8, key), calls),
        "generate x8": timed(lambda: generate_peer(model, [image] * 8, [instruction] * 8, key), calls),
    }
    print(f"\n{name}: identical actions ours vs generate(): {same}")
    for label, (p50, p90, cpu) in rows.items():
        per = f" ({p50 / 8:.2f} ms per sample)" if label.endswith("x8") else ""
        print(f"  {label}: p50 {p50:7.2f} ms  p90 {p90:7.2f} ms  cpu p50 {cpu:7.2f} ms{per}")
    for n in ("x1", "x8"):
        print(f"  ratio ours/generate {n}: {rows['ours    ' + n][0] / rows['generate ' + n][0]:.2f}")
    if name.startswith("reference"):
        wall, cpu = rows["ours    x1"][0], rows["ours    x1"][2]
        print(f"  original OpenVLA code (PERFORMANCE.md, 2 threads, idle machine): {ORIGINAL_P50_MS:.0f} ms p50 -> "
              f"ratio ours/original {wall / ORIGINAL_P50_MS:.2f} wall, {cpu / ORIGINAL_P50_MS:.2f} cpu (target <= 0.5)")


def bench_gpu_7b(calls: int, modes: list[str]) -> None:
    """openvla-7b with random weights on CUDA: bf16, 8-bit, 4-bit peak memory and predict_action latency."""
    from vla.model.quantization import quantize
    rng = np.random.default_rng(0)
    stats = {"bench": statistics_from_arrays(rng.normal(scale=0.05, size=(1000, 7)), mask=[True] * 6 + [False])}
    image, instruction = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), "pick up the red block"
    print(f"\nopenvla-7b (random weights) on {torch.cuda.get_device_name(0)}, median of {calls} after warm-up")
    for mode in [None if m == "bf16" else m for m in modes]:
        model = vla.OpenVLA.from_preset("openvla-7b", norm_stats=stats, dtype=torch.bfloat16, device="cuda")
        if mode is not None:
            quantize(model, mode)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

        def call() -> None:
            model.predict_action(image, instruction)
            torch.cuda.synchronize()

        def peer_call() -> None:
            generate_peer(model, [image], [instruction], None)
            torch.cuda.synchronize()

        # bf16: ours and generate() called in turn, so a drift of clocks or host load hits both alike
        fns = {"ours": call} if mode is not None else {"ours": call, "peer": peer_call}
        for _ in range(WARMUP):
            for fn in fns.values():
                fn()
        ms: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(calls):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                ms[name].append((time.perf_counter() - t0) * 1e3)
        p50, p90 = float(np.median(ms["ours"])), float(np.percentile(ms["ours"], 90))
        peak = torch.cuda.max_memory_allocated() / 2**30
        line = f"  {mode or 'bf16':>5}: p50 {p50:8.2f} ms  p90 {p90:8.2f} ms  peak {peak:6.2f} GiB"
        if mode is None:  # the peak covers both paths
            peer = float(np.median(ms["peer"]))
            same = np.array_equal(model.predict_action(image, instruction),
                                  generate_peer(model, [image], [instruction], None)[0])
            line += (f"  | generate() p50 {peer:8.2f} ms, ratio ours/generate {p50 / peer:.2f}, "
                     f"identical actions: {same}")
        print(line, flush=True)
        del model
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu-7b", action="store_true", help="also measure openvla-7b on CUDA (20 calls)")
    parser.add_argument("--gpu-modes", default="bf16,8bit,4bit",
                        help="weights for --gpu-7b (8bit/4bit need bitsandbytes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.calls} calls after {WARMUP} warm-up, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    rng = np.random.default_rng(0)
    stats = {"bench": statistics_from_arrays(rng.normal(scale=0.05, size=(1000, 7)), mask=[True] * 6 + [False])}
    tiny = vla.OpenVLA.from_preset("tiny", norm_stats=stats)
    bench("tiny preset", tiny, rng.integers(0, 256, (256, 320, 3), dtype=np.uint8), "pick up the red block", None,
          args.calls)
    if REFERENCE.is_dir():
        model = vla.OpenVLA.from_pretrained(REFERENCE / "checkpoint")
        image = Image.open(REFERENCE / "inputs" / "c1_synth_224x224.png")
        bench("reference/openvla-tiny (c1)", model, image, "Pick up the red block.", "bridge_orig", args.calls)
    else:
        print(f"\n{REFERENCE} is absent: reference checkpoint skipped")
    if args.gpu_7b:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu-7b needs a CUDA GPU; none is visible")
        modes = args.gpu_modes.split(",")
        unknown = sorted(set(modes) - {"bf16", "8bit", "4bit"})
        if unknown:
            raise SystemExit(f"--gpu-modes: unknown {unknown}; use bf16, 8bit, 4bit")
        bench_gpu_7b(calls=20, modes=modes)


if __name__ == "__main__":
    main()
