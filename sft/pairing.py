"""Two models' per-item test figures paired on the same items: the fine-tuned model against a
baseline, as compare and the other-model stages report it."""

from __future__ import annotations

from pathlib import Path

from sft.files import read_jsonl
from sft.metrics import TaskMetric, greater_is_better
from sft.params import UserError
from sft.stats import paired_difference

OTHERS = "others"  # other models' outputs: metrics/others/<name>.json, metrics/predictions/others/<name>.jsonl, ...


def paired(path_before: Path, path_after: Path) -> list[tuple[dict, dict]]:
    """The per-item predictions of two evaluations, matched by test item id."""
    before, after = ({r["id"]: r for r in read_jsonl(p)} for p in (path_before, path_after))
    if before.keys() != after.keys():
        raise UserError(f"{path_before} and {path_after} hold different test items; rerun the evaluations "
                        "(dvc repro evaluate fewshot)")
    return [(before[i], after[i]) for i in before]


def comparison(pairs: list[tuple[dict, dict]], metric: TaskMetric) -> tuple[dict, dict]:
    """The headline figure of both, the paired difference (interval; McNemar for 0/1 metrics), and
    the ids of the items that improved and regressed."""
    key = metric.primary
    before = [b[key] for b, _ in pairs]
    after = [a[key] for _, a in pairs]
    figures = {"metric": key, "greater_is_better": greater_is_better(key), "baseline": round(sum(before) / len(pairs), 4),
               "finetuned": round(sum(after) / len(pairs), 4), **paired_difference(before, after, metric.binary)}
    better = 1 if greater_is_better(key) else -1  # an error rate improves downwards
    flips = {"improved": [b["id"] for b, a in pairs if better * (a[key] - b[key]) > 0],
             "regressed": [b["id"] for b, a in pairs if better * (a[key] - b[key]) < 0]}
    return figures, flips


def against(figures: dict, name: str) -> dict:
    """A comparison as seen from the fine-tuned model: the other model's figure under `name`, then
    the difference and its evidence (the fine-tuned figure is reported once, elsewhere)."""
    return {name: figures["baseline"],
            **{k: v for k, v in figures.items() if k not in ("metric", "greater_is_better", "baseline", "finetuned")}}


def paired_with_finetuned(predictions: Path, name: str, metric: TaskMetric) -> dict:
    """The fine-tuned model against another model (others/<name>.jsonl) on the same items: the
    fine-tuned figure, the difference (fine-tuned minus it) and its evidence."""
    pairs = paired(predictions / OTHERS / f"{name}.jsonl", predictions / "finetuned.jsonl")
    figures, _ = comparison(pairs, metric)
    return {k: v for k, v in figures.items() if k not in ("metric", "greater_is_better", "baseline")}


ITEM_KEYS = ("task", "doc_id", "doc_hash")  # a benchmark item's identity; every other key is an outcome


def paired_benchmarks(path_before: Path, path_after: Path) -> dict:
    """Two models' benchmark items (metrics/benchmarks/details/) paired: per task and metric, both
    figures and after - before with its 95% interval (McNemar's p for 0/1 outcomes). Items are matched
    by the harness's doc id and hash; a task run on different items is refused."""
    def by_task(path):
        table: dict[str, dict] = {}
        for row in read_jsonl(path):
            table.setdefault(row["task"], {})[row["doc_id"]] = row
        return table

    before, after = by_task(path_before), by_task(path_after)
    out = {}
    for task in sorted(before.keys() & after.keys()):
        items_b, items_a = before[task], after[task]
        if {i: r["doc_hash"] for i, r in items_b.items()} != {i: r["doc_hash"] for i, r in items_a.items()}:
            raise UserError(f"{path_before} and {path_after}: task {task} was run on different items; rerun both "
                            "(dvc repro benchmarks)")
        ids = sorted(items_b)
        for metric in sorted(k for k in items_b[ids[0]] if k not in ITEM_KEYS):
            xs = [items_b[i][metric] for i in ids]
            ys = [items_a[i].get(metric, 0.0) for i in ids]
            out.setdefault(task, {})[metric] = {
                "baseline": round(sum(xs) / len(ids), 4), "finetuned": round(sum(ys) / len(ids), 4), "items": len(ids),
                **paired_difference(xs, ys, binary=all(v in (0.0, 1.0) for v in xs + ys))}
    return out
