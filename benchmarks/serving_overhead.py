"""Serving overhead: our ZeroMQ server vs the bare pyzmq floor and two published transports.

One run, same payload (a 224x224x3 uint8 image + an instruction), no-op policies, loopback:
  ours         serving.PolicyServer(NoopPolicy) + serving.PolicyClient
  bare_zmq     pyzmq DEALER/ROUTER round trip of the same bytes (the floor)
  openpi_ws    openpi-style websockets + msgpack-numpy server, PyPI openpi-client
  deploy_http  OpenVLA deploy.py-style FastAPI + uvicorn + json-numpy, `requests` client
Each server runs in its own process. Latency: one client, warmed up, in rounds that alternate
the systems (this machine is shared, so rounds spread the noise evenly); p50/p99 over all
rounds, and CPU time per request (client + server process), which load moves much less. Throughput: 8 client processes x 200 requests each, all started together.

    .venv/bin/python benchmarks/serving_overhead.py [--requests 1000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import importlib
import multiprocessing as mp
import os
import pathlib
import socket
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # for `baselines.*` when run as a script
sys.path.insert(0, str(HERE.parent))

IMAGE_SHAPE = (224, 224, 3)
INSTRUCTION = "put the carrot on the plate"
SYSTEMS = ("bare_zmq", "ours", "openpi_ws", "deploy_http")
READY_TIMEOUT_S = 60.0


class OursClient:
    """serving.PolicyClient, the way a robot loop calls it."""

    def __init__(self, port: int) -> None:
        from serving.client import PolicyClient

        self.client = PolicyClient(f"tcp://127.0.0.1:{port}", timeout_s=10.0)

    def act(self, image: np.ndarray, instruction: str) -> np.ndarray:
        return self.client.act(images={"primary": image}, instruction=instruction).action


def serve_ours(port: int) -> None:
    """`vla serve --noop --action-dim 7` on the given port."""
    from serving.policies import NoopPolicy
    from serving.server import PolicyServer

    PolicyServer(NoopPolicy(7), port=port).serve_forever()


def _system(name: str) -> tuple:
    if name == "ours":
        return serve_ours, OursClient
    module = importlib.import_module(f"baselines.{name}")
    return module.serve, module.Client


def _serve(name: str, port: int) -> None:
    _system(name)[0](port)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connect(name: str, port: int):
    """A client of system `name` once its server answers (servers take a moment to start)."""
    deadline, image = time.monotonic() + READY_TIMEOUT_S, np.zeros(IMAGE_SHAPE, np.uint8)
    while True:
        try:
            client = _system(name)[1](port)
            client.act(image, INSTRUCTION)
            return client
        except Exception:  # not up yet: connection refused / timeout, depending on the transport
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc (Linux)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _latencies(client, n: int, warmup: int) -> np.ndarray:
    image = np.random.default_rng(0).integers(0, 256, IMAGE_SHAPE, dtype=np.uint8)
    for _ in range(warmup):
        client.act(image, INSTRUCTION)
    out = np.empty(n)
    for i in range(n):
        start = time.perf_counter()
        action = client.act(image, INSTRUCTION)
        out[i] = time.perf_counter() - start
        if action.shape != (7,):
            raise RuntimeError(f"bad action shape {action.shape}")
    return out


def _throughput_worker(name: str, port: int, n: int, barrier, results) -> None:
    client = _connect(name, port)
    image = np.random.default_rng(1).integers(0, 256, IMAGE_SHAPE, dtype=np.uint8)
    for _ in range(20):
        client.act(image, INSTRUCTION)
    barrier.wait()
    start, answered = time.monotonic(), 0
    for _ in range(n):
        if client.act(image, INSTRUCTION).shape == (7,):
            answered += 1
    results.put((start, time.monotonic(), answered))


def _throughput(ctx, name: str, port: int, clients: int, n: int) -> tuple[float, int]:
    barrier, results = ctx.Barrier(clients), ctx.Queue()
    procs = [ctx.Process(target=_throughput_worker, args=(name, port, n, barrier, results)) for _ in range(clients)]
    for p in procs:
        p.start()
    rows = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    starts, ends, answered = zip(*rows)
    return sum(answered) / (max(ends) - min(starts)), clients * n - sum(answered)


def main() -> None:
    """Run every system, print p50/p99, throughput and the ratios against ours."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000, help="timed single-client requests per round")
    ap.add_argument("--http-requests", type=int, default=200, help="the same for deploy_http (milliseconds each)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--per-client", type=int, default=200)
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    ports = {name: _free_port() for name in args.systems}
    servers = {name: ctx.Process(target=_serve, args=(name, ports[name]), daemon=True) for name in args.systems}
    for p in servers.values():
        p.start()
    try:
        clients = {name: _connect(name, ports[name]) for name in args.systems}
        lat: dict[str, list[np.ndarray]] = {name: [] for name in args.systems}
        # CPU time per request, client process + server process: unlike wall time it barely moves
        # with the load other users put on a shared machine
        cpu: dict[str, float] = {name: 0.0 for name in args.systems}
        for r in range(args.rounds):
            for name in args.systems:
                n = args.http_requests if name == "deploy_http" else args.requests
                c0, s0 = time.process_time(), _proc_cpu_s(servers[name].pid)
                lat[name].append(_latencies(clients[name], n, warmup=n // 5))
                cpu[name] += (time.process_time() - c0 + _proc_cpu_s(servers[name].pid) - s0) / (n + n // 5)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{k} {np.median(v[-1]) * 1e6:.0f} us" for k, v in lat.items()), flush=True)
        tput = {name: _throughput(ctx, name, ports[name], args.clients, args.per_client) for name in args.systems}
    finally:
        for p in servers.values():
            p.kill()

    p50 = {k: float(np.median(np.concatenate(v))) for k, v in lat.items()}
    p99 = {k: float(np.percentile(np.concatenate(v), 99)) for k, v in lat.items()}
    print(f"\n224x224x3 uint8 + instruction, loopback, no-op policy; {args.rounds} rounds; "
          f"throughput: {args.clients} client processes x {args.per_client} requests")
    print(f"{'system':<12} {'p50 us':>9} {'p99 us':>9} {'cpu us/req':>11} {'req/s':>9} {'lost':>5}")
    for k in args.systems:
        print(f"{k:<12} {p50[k] * 1e6:9.0f} {p99[k] * 1e6:9.0f} {cpu[k] / args.rounds * 1e6:11.0f} "
              f"{tput[k][0]:9.0f} {tput[k][1]:5d}")
    if "ours" in p50:
        print()
        if "bare_zmq" in p50:
            print(f"ours / bare_zmq p50:    {p50['ours'] / p50['bare_zmq']:.2f}x (target <= 1.3)")
            print(f"ours / bare_zmq CPU per request: {cpu['ours'] / cpu['bare_zmq']:.2f}x")
        if "openpi_ws" in p50:
            print(f"openpi_ws / ours p50:   {p50['openpi_ws'] / p50['ours']:.1f}x lower (issue target >= 3)")
            print(f"throughput ours / openpi_ws: {tput['ours'][0] / tput['openpi_ws'][0]:.1f}x")
        if "deploy_http" in p50:
            print(f"deploy_http / ours p50: {p50['deploy_http'] / p50['ours']:.1f}x lower (target >= 10)")
            print(f"throughput ours / deploy_http: {tput['ours'][0] / tput['deploy_http'][0]:.1f}x")


if __name__ == "__main__":
    main()
