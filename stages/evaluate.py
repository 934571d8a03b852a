"""evaluate: generate on the test split with one model, greedy, and score with the task metric.

    python -m stages.evaluate --model models/merged --name finetuned --data data/prepared

Reads `evaluate:` of params.yaml. dvc.yaml runs it twice (foreach): `baseline` on models/base
and `finetuned` on models/merged, so a change to training never re-evaluates the baseline.
Writes metrics/<name>.json and the per-sample predictions metrics/predictions/<name>.jsonl.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from stages.files import read_jsonl, write_json, write_jsonl
from stages.generation import generate
from stages.models import load_folder
from stages.params import load, run
from stages.scoring import aggregate, scorer


@dataclass
class EvaluateParams:
    max_new_tokens: int = 96  # a reply longer than this is cut (and most likely wrong)
    batch_size: int = 32  # prompts generated together; larger is faster until memory runs out
    dtype: str = "float32"


def main() -> None:
    ap = argparse.ArgumentParser(description="Evaluate one model on the test split.")
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", required=True, help="baseline or finetuned: names the output files")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="metrics")
    args = ap.parse_args()
    p = load("evaluate", EvaluateParams)

    data = Path(args.data)
    records = read_jsonl(data / "test.jsonl")
    score = scorer(json.loads((data / "task.json").read_text())["metric"])
    model, tokenizer = load_folder(args.model, dtype=p.dtype)
    replies, speed = generate(model, tokenizer, [r["prompt"] for r in records], p.max_new_tokens, p.batch_size)

    per_record = [score(reply, r["completion"][0]["content"], r["references"]) for r, reply in zip(records, replies, strict=True)]
    predictions = [{"id": r["id"], "prediction": reply, "gold": r["completion"][0]["content"], **s}
                   for r, reply, s in zip(records, replies, per_record, strict=True)]
    metrics = {**aggregate(per_record), "samples": len(records), **speed}
    write_jsonl(Path(args.out) / "predictions" / f"{args.name}.jsonl", predictions)
    write_json(Path(args.out) / f"{args.name}.json", metrics)
    print(f"[evaluate] {args.name}: {metrics}", flush=True)


if __name__ == "__main__":
    run(main)
