"""fewshot: a second baseline, the base model shown solved train examples before each test prompt.

    python -m stages.fewshot --model models/base --data data/prepared --out metrics

Reads `fewshot:` of params.yaml (how many examples, which) and `evaluate:` (how to generate: the
same settings as the other evaluations, so the two baselines differ by the examples alone).
`fewshot.shots` train records, drawn once with `fewshot.seed`, come before every test prompt as
earlier turns of the chat (sft/fewshot.py). Writes what evaluate writes, named fewshot:
metrics/fewshot.json, metrics/predictions/fewshot.jsonl, metrics/confusion/fewshot.json and
metrics/speed/fewshot.json; compare pairs it with the fine-tuned model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sft import fewshot
from sft.evaluation import EvaluateParams, evaluate
from sft.fewshot import FewShotParams
from sft.files import read_jsonl
from sft.params import load, run
from sft.task import read_task


def main() -> None:
    ap = argparse.ArgumentParser(description="Evaluate the base model few-shot on the test split.")
    ap.add_argument("--model", default="models/base")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="metrics")
    ap.add_argument("--kept", default=None, help="where replies are kept before scoring (default: "
                    "<out>/replies.partial)")
    args = ap.parse_args()
    f = load("fewshot", FewShotParams)
    p = load("evaluate", EvaluateParams)

    data = Path(args.data)
    records = read_jsonl(data / "test.jsonl")
    shown = fewshot.train_examples(data, f)
    print(f"[fewshot] {f.shots} train examples before each test prompt: ids {[r['id'] for r in shown]}", flush=True)
    evaluate(args.model, "fewshot", records, fewshot.prompts(records, shown), read_task(data), p, Path(args.out),
             args.kept)


if __name__ == "__main__":
    run(main)
