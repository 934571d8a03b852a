"""Benchmark: what DVC costs when there is nothing to do (target: under 3 s each).

    python bench/overhead.py [--repeats 5]

Times `dvc repro` (no-op) and `dvc status` on the finished pipeline, each a fresh process as a
user runs it, alternating, and reports the medians. Refuses to run on a stale pipeline.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from record import save

ROOT = Path(__file__).resolve().parents[1]


def timed(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"dvc {' '.join(args)} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    _, status = timed("status")
    if "up to date" not in status:
        sys.exit(f"the pipeline is not finished (dvc status):\n{status}\nrun `dvc repro` first")
    times = {"repro": [], "status": []}
    for _ in range(args.repeats):
        seconds, out = timed("repro")
        if "Running stage" in out:
            sys.exit(f"dvc repro ran a stage; the pipeline was not finished:\n{out[-2000:]}")
        times["repro"].append(seconds)
        times["status"].append(timed("status")[0])
    medians = {k: round(statistics.median(v), 2) for k, v in times.items()}
    result = {"benchmark": "overhead", "seconds": {k: [round(s, 2) for s in v] for k, v in times.items()},
              "median_seconds": medians, "target_seconds": 3}
    out = save("overhead", result)
    print(f"overhead: no-op dvc repro {medians['repro']} s, dvc status {medians['status']} s "
          f"(medians of {args.repeats}; target < 3 s) -> {out}")


if __name__ == "__main__":
    main()
