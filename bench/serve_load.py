"""Benchmark: a bounded load test of the server `make serve` runs, on loopback.

    python bench/serve_load.py [--clients 8] [--requests 40] [--limit 600] [--backends llamacpp,transformers]

Starts `python -m apps.serve` on a free loopback port, then `--clients` threads send `--requests`
chat completions in all (distinct test prompts, greedy, evaluate.max_new_tokens) under a time
limit. Every request must be answered, and each reply must be the one its own prompt gets when
asked alone (nothing lost, nothing mixed up between concurrent requests). Latency percentiles and
throughput go to bench/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ask(base_url: str, name: str, messages: list[dict], max_tokens: int, timeout: float,
        key: str | None = None) -> tuple[str, float]:
    """One chat completion: the reply and its latency in seconds."""
    body = json.dumps({"model": name, "messages": messages, "max_tokens": max_tokens, "temperature": 0}).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(f"{base_url}/chat/completions", data=body, headers=headers)
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.loads(response.read())["choices"][0]["message"]["content"]
    return reply, time.perf_counter() - started


def load(base_url: str, name: str, prompts: list[list[dict]], clients: int, requests: int, max_tokens: int,
         limit: float, key: str | None = None) -> dict:
    """`requests` completions from `clients` threads, prompt i % len(prompts) each; the replies
    are checked against each prompt asked alone first."""
    alone = [ask(base_url, name, p, max_tokens, limit, key)[0] for p in prompts]
    jobs = [i % len(prompts) for i in range(requests)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(ask, base_url, name, prompts[j], max_tokens, limit, key) for j in jobs]
        done, pending = wait(futures, timeout=limit)
    seconds = time.perf_counter() - started
    answered = [(j, f.result()) for j, f in zip(jobs, futures, strict=True) if f in done and not f.exception()]
    latencies = sorted(latency for _, (_, latency) in answered)
    mixed = sum(reply != alone[j] for j, (reply, _) in answered)

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2) if latencies else None

    return {"clients": clients, "requests": requests, "answered": len(answered), "unfinished": len(pending),
            "failed": sum(1 for f in done if f.exception()), "replies_not_as_alone": mixed,
            "seconds": round(seconds, 1), "requests_per_second": round(len(answered) / seconds, 2),
            "latency_p50": pct(0.5), "latency_p90": pct(0.9), "latency_max": pct(1.0),
            "latency_mean": round(statistics.mean(latencies), 2) if latencies else None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(model: str, name: str, port: int, backend: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "apps.serve", "--model", model, "--name", name,
                             "--host", "127.0.0.1", "--port", str(port), "--backend", backend], cwd=ROOT)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)
            return proc
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"the server exited with status {proc.returncode}")
            time.sleep(1)
    proc.terminate()
    sys.exit("the server did not answer within 300 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--prompts", type=int, default=8, help="distinct test prompts the requests cycle through")
    ap.add_argument("--limit", type=float, default=600, help="seconds for the whole load")
    ap.add_argument("--model", default="models/merged")
    ap.add_argument("--backends", default="auto", help="comma-separated servers to load one after the other "
                    "(auto: the one make serve runs; e.g. llamacpp,transformers to compare them)")
    args = ap.parse_args()
    import yaml

    sys.path.insert(0, str(ROOT))
    from record import save

    from sft.device import serving_backend

    max_tokens = yaml.safe_load((ROOT / "params.yaml").read_text())["evaluate"]["max_new_tokens"]
    records = [json.loads(line) for line in (ROOT / "data" / "prepared" / "test.jsonl").open()][:args.prompts]
    servers = {}
    for backend in args.backends.split(","):
        port = free_port()
        proc = serving(args.model, "local", port, backend)
        try:
            servers[serving_backend() if backend == "auto" else backend] = load(
                f"http://127.0.0.1:{port}/v1", "local", [r["prompt"] for r in records], args.clients, args.requests,
                max_tokens, args.limit)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        print(f"serve_load: {backend}: {list(servers.values())[-1]}", flush=True)
    result = {"benchmark": "serve_load", "make_serve_runs": serving_backend(), "model": args.model,
              "max_tokens": max_tokens, "servers": servers}
    out = save("serve_load", result)
    print(f"serve_load: -> {out}")


if __name__ == "__main__":
    main()
