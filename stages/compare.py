"""compare: the fine-tuned model against each baseline on the same test items, paired.

    python -m stages.compare --predictions metrics/predictions --data data/prepared --out metrics

Reads the per-sample predictions of evaluate (baseline, finetuned) and fewshot (no params of its
own). Writes metrics/compare.json: the headline figure of both, the paired difference with a 95%
bootstrap interval and, for 0/1 metrics, the items that improved and regressed with an exact
McNemar p-value; the same against the few-shot baseline under `against_fewshot`.
metrics/flips.json lists those items' ids, each way, for reading them side by side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sft.files import write_json
from sft.pairing import against, comparison, paired
from sft.params import run
from sft.task import read_task


def main() -> None:
    ap = argparse.ArgumentParser(description="Compare baseline and fine-tuned predictions, paired.")
    ap.add_argument("--predictions", default="metrics/predictions")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="metrics")
    args = ap.parse_args()

    metric = read_task(args.data).task_metric
    predictions = Path(args.predictions)
    figures, flips = comparison(paired(predictions / "baseline.jsonl", predictions / "finetuned.jsonl"), metric)
    fewshot, fewshot_flips = comparison(paired(predictions / "fewshot.jsonl", predictions / "finetuned.jsonl"), metric)
    figures["against_fewshot"] = against(fewshot, "fewshot")
    flips["against_fewshot"] = fewshot_flips
    write_json(Path(args.out) / "compare.json", figures)
    write_json(Path(args.out) / "flips.json", flips)
    print(f"[compare] {figures}", flush=True)


if __name__ == "__main__":
    run(main)
