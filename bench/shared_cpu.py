"""Benchmark: a training loop beside a busy process, with every core's threads (before) and with the
CPUs it was given (after: sft.device.given_cpus, OMP_WAIT_POLICY=PASSIVE).

    python bench/shared_cpu.py [--seconds 15]

What two experiments of `make sweep JOBS=2`, two Slurm tasks on one node, or a server beside
`dvc repro` do to each other. Each side is a fresh process running the same float32 loop (a
small MLP's forward and backward, as a tiny model's training step), counting steps for a fixed
time; the busy neighbour runs the same loop. Reports steps a second: alone with every core (the
machine's own limit), then both processes with every core's threads each (torch's default: what
the stages did before), then both with their share (SFT_CPUS: what they do now).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from record import save

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def loop(seconds: float) -> float:
    """Steps a second of a small MLP's training step, with the threads sft.device gives this process."""
    import torch

    from sft.device import use_cpu_cores

    use_cpu_cores()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.GELU(), torch.nn.Linear(2048, 512))
    opt = torch.optim.AdamW(model.parameters())
    x = torch.randn(64, 512)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        steps += 1
    return steps / (time.perf_counter() - started)


def side(seconds: float, env: dict) -> subprocess.Popen:
    unset = ("SFT_CPUS", "SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS", "OMP_WAIT_POLICY")
    base = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.Popen([sys.executable, __file__, "--worker", "--seconds", str(seconds)], cwd=ROOT,
                            env={**base, **env}, stdout=subprocess.PIPE, text=True)


def together(seconds: float, env: dict, n: int) -> list[float]:
    procs = [side(seconds, env) for _ in range(n)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1])["steps_per_second"] for p in procs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--worker", action="store_true", help="(internal) one side: print its steps a second")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps({"threads": __import__("torch").get_num_threads(), "steps_per_second": loop(args.seconds)}))
        return
    cores = len(os.sched_getaffinity(0))
    [alone] = together(args.seconds, {"SFT_CPUS": str(cores)}, 1)
    before = together(args.seconds, {"SFT_CPUS": str(cores)}, 2)  # every core's threads, each
    share = str(max(1, cores // 2))
    after = together(args.seconds, {"SFT_CPUS": share, "OMP_NUM_THREADS": share, "OMP_WAIT_POLICY": "PASSIVE"}, 2)
    result = {"cores": cores, "seconds": args.seconds, "alone_steps_per_second": round(alone, 2),
              "beside_busy_all_cores": [round(v, 2) for v in before], "beside_busy_given_share": [round(v, 2) for v in after],
              "before_total_vs_alone": round(sum(before) / alone, 3), "after_total_vs_alone": round(sum(after) / alone, 3),
              "after_vs_before_each": round(sum(after) / sum(before), 3)}
    print(json.dumps(result, indent=2))
    print(f"[bench] {save('shared_cpu', result)}: alone {alone:.1f} steps/s (the machine's limit, {cores} cores); "
          f"two processes, every core's threads each: {sum(before):.1f} together ({result['before_total_vs_alone']}x "
          f"the limit); each with its share: {sum(after):.1f} ({result['after_total_vs_alone']}x)")


if __name__ == "__main__":
    main()
