"""Fine-tuning throughput: samples/s and peak memory per mode, tiny preset on CPU (or a GPU preset).

Each configuration runs in its own subprocess (so peak memory is its own), same batch, warmed up:

  lora / full, ours   vla.train's step: ActionLoss (lm_head on action positions only) + AdamW
  full, peer          the same step through the model's own `model(..., labels=...).loss`, which
                      projects every position (256 patches + prompt) onto the 32k vocabulary
  lora, end to end    vla.train.finetune on a small RLDS set written here (data, logging, checkpoint
                      included): its ratio to the bare step is the loop's per-step overhead

Usage: .venv/bin/python benchmarks/finetune_throughput.py [--preset tiny] [--batch 8] [--steps 15]
       [--device cpu|cuda] [--threads 1]; on a GPU: --preset openvla-7b --batch 8 --modes lora,qlora
"""
from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def worker(preset: str, mode: str, head: str, batch: int, steps: int, device: str, threads: int) -> dict:
    """Time `steps` optimizer steps of one configuration after 3 warm-up steps."""
    import torch

    import vla
    from vla.train.config import FinetuneConfig
    from vla.train.modes import set_trainable
    from vla.train.step import ActionLoss

    torch.set_num_threads(threads)
    dev = torch.device(device)
    model = vla.OpenVLA.from_preset(preset, seed=0, device=dev)
    if mode == "qlora":
        from vla.model.quantization import quantize
        quantize(model, "4bit")
    cfg = FinetuneConfig(base=preset, out=pathlib.Path("unused"), data_dir=pathlib.Path("unused"), dataset="x",
                         mode=mode)
    set_trainable(model, cfg)
    lm = ActionLoss(model).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(batch)]
    inputs = model.processor.encode_training(["pick up the red block"] * batch, rng.uniform(-1, 1, (batch, 7)))
    inputs["pixel_values"] = model.processor.process_images(images)
    inputs = {k: v.to(dev) for k, v in inputs.items()}
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)

    def step() -> None:
        with amp:
            if head == "ours":
                loss = lm(**inputs)[0]
            else:
                loss = model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    return {"samples_per_s": batch * steps / wall, "step_s": wall / steps, "peak_mb": peak}


def end_to_end(preset: str, batch: int, steps: int, threads: int) -> dict:
    """vla.train.finetune (lora) on a written RLDS set; its own summary figures."""
    import torch

    from vla.data.rlds_writer import Episode, write_rlds
    from vla.train import FinetuneConfig, finetune

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        episodes = [Episode(images={"primary": rng.integers(0, 256, (10, 224, 224, 3), dtype=np.uint8)},
                            state=np.zeros((10, 2), np.float32), action=rng.normal(size=(10, 7)).astype(np.float32),
                            instruction="pick up the red block") for _ in range(8)]
        write_rlds(root, "bench", episodes)
        # eval/checkpoint only at the end, as a long run amortizes them
        out = finetune(FinetuneConfig(base=preset, out=root / "out", data_dir=root, dataset="bench", mode="lora",
                                      max_steps=steps + 3, batch_size=batch, heldout_fraction=0.0,
                                      eval_every=10**6, checkpoint_every=10**6, progress=False))
        rows = [json.loads(r) for r in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
        step_s = [r["time/step_s"] for r in rows if "time/step_s" in r][3:]  # after 3 warm-up steps
        return {"samples_per_s": batch / float(np.mean(step_s)), "step_s": float(np.mean(step_s)),
                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(args: argparse.Namespace, *extra: str) -> dict:
    cmd = [sys.executable, __file__, "--preset", args.preset, "--batch", str(args.batch), "--steps", str(args.steps),
           "--device", args.device, "--threads", str(args.threads), *extra]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)  # 2 shared cores: a 2nd thread mostly spins
    p.add_argument("--modes", default="lora,full")
    p.add_argument("--worker", nargs=2, metavar=("MODE", "HEAD"), help=argparse.SUPPRESS)
    p.add_argument("--e2e", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.preset, *args.worker, args.batch, args.steps, args.device, args.threads)))
        return
    if args.e2e:
        print(json.dumps(end_to_end(args.preset, args.batch, args.steps, args.threads)))
        return
    print(f"preset {args.preset}, batch {args.batch}, {args.steps} timed steps, {args.device}, {args.threads} threads")
    results = {}
    for mode in args.modes.split(","):
        results[(mode, "ours")] = run_child(args, "--worker", mode, "ours")
    if args.preset == "tiny":
        results[("full", "peer: model(...).loss")] = run_child(args, "--worker", "full", "peer")
        results[("lora", "end to end finetune()")] = run_child(args, "--e2e")
    for (mode, head), r in results.items():
        print(f"{mode:5s} {head:24s} {r['samples_per_s']:8.2f} samples/s  {r['step_s'] * 1e3:8.1f} ms/step  "
              f"peak {r['peak_mb']:8.0f} MB")
    if ("full", "ours") in results and ("lora", "ours") in results:
        lo, fu = results[("lora", "ours")], results[("full", "ours")]
        print(f"lora / full: {lo['samples_per_s'] / fu['samples_per_s']:.2f}x samples/s, "
              f"{lo['peak_mb'] / fu['peak_mb']:.2f}x peak memory")
    if ("full", "peer: model(...).loss") in results:
        peer, ours = results[("full", "peer: model(...).loss")], results[("full", "ours")]
        print(f"full, action-position head vs model(...).loss: {ours['samples_per_s'] / peer['samples_per_s']:.2f}x "
              f"samples/s, {ours['peak_mb'] / peer['peak_mb']:.2f}x peak memory")
    if ("lora", "end to end finetune()") in results:
        e2e, bare = results[("lora", "end to end finetune()")], results[("lora", "ours")]
        print(f"lora, finetune() end to end / bare step: {e2e['samples_per_s'] / bare['samples_per_s']:.2f}x samples/s "
              "(data decode + processor + logging per step)")


if __name__ == "__main__":
    main()
