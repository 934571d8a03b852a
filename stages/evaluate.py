"""evaluate: generate on the test split with one model, greedy, and score with the task metric.

    python -m stages.evaluate --model models/merged --name finetuned --data data/prepared

Reads `evaluate:` of params.yaml. dvc.yaml runs it twice (foreach): `baseline` on models/base
and `finetuned` on models/merged, so a change to training never re-evaluates the baseline.
Writes metrics/<name>.json (every figure of the task metric, a 95% interval of the headline
figure, the share of unparseable replies), the per-sample predictions
metrics/predictions/<name>.jsonl, for letter answers metrics/confusion/<name>.json, and the
generation speed, which varies by machine, to metrics/speed/<name>.json (sft/evaluation.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sft.evaluation import EvaluateParams, evaluate
from sft.files import read_jsonl
from sft.params import load, run
from sft.task import read_task


def main() -> None:
    ap = argparse.ArgumentParser(description="Evaluate one model on the test split.")
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", required=True, help="baseline or finetuned: names the output files")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="metrics")
    ap.add_argument("--kept", default=None, help="where replies are kept before scoring (default: "
                    "<out>/replies.partial; not an output: a rerun reads them back instead of generating)")
    args = ap.parse_args()
    p = load("evaluate", EvaluateParams)

    records = read_jsonl(Path(args.data) / "test.jsonl")
    evaluate(args.model, args.name, records, [r["prompt"] for r in records], read_task(args.data), p,
             Path(args.out), args.kept)


if __name__ == "__main__":
    run(main)
