"""Where every benchmark writes its figures: bench/results/<name>.json, stamped with the machine and date."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def save(name: str, result: dict, results: Path = RESULTS) -> str:
    """Writes the result (plus machine and date) to `results` (bench/results/ of a repository) and
    returns its path relative to that repository."""
    result = {**result, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d")}
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return str(out.relative_to(results.parents[1]))


def run_side(script: str, side: str, steps: int, *extra: str) -> dict:
    """One side of a comparison in a fresh process (its own peak memory): `script --side S --steps N
    [extra]` prints its figures as the last line of JSON."""
    done = subprocess.run([sys.executable, script, "--side", side, "--steps", str(steps), *extra], cwd=RESULTS.parents[1],
                          capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if done.returncode != 0:
        sys.exit(f"{side} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
