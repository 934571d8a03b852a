"""compare: the fine-tuned model against every baseline it is given, on the same test items, paired.

    python -m stages.compare --finetuned metrics/predictions/finetuned.jsonl \
        --baseline metrics/predictions/baseline.jsonl --against metrics/predictions/fewshot.jsonl \
        --benchmarks metrics/benchmarks/details --data data/prepared --out metrics

Reads per-item predictions (no params of its own): the fine-tuned model's, the baseline's (the base
model zero-shot, the headline) and those of every other baseline after --against, each named by
its file (fewshot.jsonl: fewshot). Writes metrics/compare.json: the headline figure of both, the
paired difference with a 95% bootstrap interval and, for 0/1 metrics, the items that improved and
regressed with an exact McNemar p-value; the same against each other baseline under
`against_<name>`; and under `benchmarks`, each benchmark task's figure of both models paired by
item (metrics/benchmarks/details/, the benchmarks stage's). metrics/flips.json lists the flipped
test items' ids, each way, for reading them side by side. The card reads each pairing from here. A baseline of a new kind is one more --against file
(and its metrics/<name>.json among the card's deps) in dvc.yaml.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sft.files import write_json
from sft.pairing import against, comparison, paired, paired_benchmarks
from sft.params import UserError, run
from sft.task import read_task


def main() -> None:
    ap = argparse.ArgumentParser(description="Compare the fine-tuned model with every baseline, paired.")
    ap.add_argument("--finetuned", default="metrics/predictions/finetuned.jsonl")
    ap.add_argument("--baseline", default="metrics/predictions/baseline.jsonl", help="the headline baseline")
    ap.add_argument("--against", nargs="*", default=["metrics/predictions/fewshot.jsonl"],
                    help="every other baseline, each named by its file")
    ap.add_argument("--benchmarks", default="metrics/benchmarks/details",
                    help="each benchmark item's outcome of both models: <dir>/<baseline>.jsonl and <finetuned>.jsonl")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="metrics")
    args = ap.parse_args()

    names = [Path(path).stem for path in [args.baseline, args.finetuned, *args.against]]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise UserError(f"compare: two baselines named {', '.join(twice)} (each is named by its file); give each "
                        "predictions file a name of its own")
    metric = read_task(args.data).task_metric
    figures, flips = comparison(paired(Path(args.baseline), Path(args.finetuned)), metric)
    for path in map(Path, args.against):
        other, other_flips = comparison(paired(path, Path(args.finetuned)), metric)
        figures[f"against_{path.stem}"] = against(other, path.stem)
        flips[f"against_{path.stem}"] = other_flips
    details = Path(args.benchmarks)
    figures["benchmarks"] = paired_benchmarks(details / f"{Path(args.baseline).stem}.jsonl",
                                              details / f"{Path(args.finetuned).stem}.jsonl")
    write_json(Path(args.out) / "compare.json", figures)
    write_json(Path(args.out) / "flips.json", flips)
    print(f"[compare] {figures}", flush=True)


if __name__ == "__main__":
    run(main)
