"""Two models' per-item test figures paired on the same items: the fine-tuned model against a
baseline, as compare and the other-model stages report it."""

from __future__ import annotations

from pathlib import Path

from sft.files import read_jsonl
from sft.metrics import TaskMetric
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
    figures = {"metric": key, "baseline": round(sum(before) / len(pairs), 4),
               "finetuned": round(sum(after) / len(pairs), 4), **paired_difference(before, after, metric.binary)}
    flips = {"improved": [b["id"] for b, a in pairs if a[key] > b[key]],
             "regressed": [b["id"] for b, a in pairs if a[key] < b[key]]}
    return figures, flips


def against(figures: dict, name: str) -> dict:
    """A comparison as seen from the fine-tuned model: the other model's figure under `name`, then
    the difference and its evidence (the fine-tuned figure is reported once, elsewhere)."""
    return {name: figures["baseline"], **{k: v for k, v in figures.items() if k not in ("metric", "baseline", "finetuned")}}


def paired_with_finetuned(predictions: Path, name: str, metric: TaskMetric) -> dict:
    """The fine-tuned model against another model (others/<name>.jsonl) on the same items: the
    fine-tuned figure, the difference (fine-tuned minus it) and its evidence."""
    pairs = paired(predictions / OTHERS / f"{name}.jsonl", predictions / "finetuned.jsonl")
    figures, _ = comparison(pairs, metric)
    return {k: v for k, v in figures.items() if k not in ("metric", "baseline")}
