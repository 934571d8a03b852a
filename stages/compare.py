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

from sft.files import read_jsonl, write_json
from sft.metrics import TaskMetric
from sft.params import UserError, run
from sft.stats import paired_difference
from sft.task import read_task


def paired(path_before: Path, path_after: Path) -> list[tuple[dict, dict]]:
    before, after = ({r["id"]: r for r in read_jsonl(p)} for p in (path_before, path_after))
    if before.keys() != after.keys():
        raise UserError(f"{path_before} and {path_after} hold different test items; rerun the evaluations "
                        "(dvc repro evaluate fewshot)")
    return [(before[i], after[i]) for i in before]


def comparison(pairs: list[tuple[dict, dict]], metric: TaskMetric) -> tuple[dict, dict]:
    key = metric.primary
    before = [b[key] for b, _ in pairs]
    after = [a[key] for _, a in pairs]
    figures = {"metric": key, "baseline": round(sum(before) / len(pairs), 4),
               "finetuned": round(sum(after) / len(pairs), 4), **paired_difference(before, after, metric.binary)}
    flips = {"improved": [b["id"] for b, a in pairs if a[key] > b[key]],
             "regressed": [b["id"] for b, a in pairs if a[key] < b[key]]}
    return figures, flips


def without(figures: dict, *keys: str) -> dict:
    return {k: v for k, v in figures.items() if k not in keys}


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
    figures["against_fewshot"] = {"fewshot": fewshot.pop("baseline"), **without(fewshot, "metric", "finetuned")}
    flips["against_fewshot"] = fewshot_flips
    write_json(Path(args.out) / "compare.json", figures)
    write_json(Path(args.out) / "flips.json", flips)
    print(f"[compare] {figures}", flush=True)


if __name__ == "__main__":
    run(main)
