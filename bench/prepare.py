"""Benchmark: the prepare stage on 100,000 synthetic text-to-SQL records (target: under 30 s).

    python bench/prepare.py [--records 100000] [--repeats 3]

Generates the records once with data/generate_sql.py (not timed), then times the whole stage
as `dvc repro` runs it (a fresh process: imports, loading, rendering, tokenizing, writing) with
models/base's tokenizer, and writes bench/results/prepare.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import save

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=str(ROOT / "models" / "base"), help="tokenizer folder (dvc repro base)")
    args = ap.parse_args()
    if not (Path(args.model) / "tokenizer.json").is_file():
        sys.exit(f"{args.model} has no tokenizer; run `dvc repro base` first")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        data.mkdir()
        subprocess.run([sys.executable, str(ROOT / "data" / "generate_sql.py"), "--out", str(data),
                        "--sizes", f"train={args.records},test=200"], check=True, capture_output=True)
        (work / "params.yaml").write_text(
            f"prepare:\n  dataset: {data}\n  prompts: {ROOT / 'prompts' / 'sql'}\n  audit_examples: 3\n"
            "  max_length: 1024\n")
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "stages.prepare", "--model", args.model, "--out", "out",
                            "--metrics", "m.json"], cwd=work, check=True, capture_output=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
            seconds.append(time.perf_counter() - started)
        records = json.loads((work / "m.json").read_text())["records"]

    result = {"benchmark": "prepare", "records": sum(records.values()), "split": records,
              "seconds": [round(s, 2) for s in seconds], "median_seconds": round(statistics.median(seconds), 2),
              "records_per_second": round(sum(records.values()) / statistics.median(seconds)),
              "target_seconds": 30}
    out = save("prepare", result)
    print(f"prepare: {result['records']} records in {result['median_seconds']} s (median of {args.repeats}; "
          f"target < 30 s) -> {out}")


if __name__ == "__main__":
    main()
