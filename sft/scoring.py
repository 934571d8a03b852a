"""The one way a stage scores replies: the task's metric on every record (sft/metrics.py), then the
headline figure with its 95% interval, the other figures and the unparseable share. evaluate,
select and export call `scores`; task_metrics/ is the same scorer behind `evaluate.load`, for
code outside this project (tests/test_metrics.py checks the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass

from sft.metrics import TaskMetric, aggregate, score_all
from sft.stats import interval
from sft.task import Task


@dataclass
class Scores:
    per_record: list[dict]  # each record's figures, in the order of the records
    means: dict  # the task metric's own figures (the per-record means), without interval or count
    figures: dict  # the headline figure, its interval, the other means, samples


def gold(record: dict) -> str:
    return record["completion"][0]["content"]


def scores(task: Task, replies: list[str], records: list[dict]) -> Scores:
    """Each reply scored against its record's gold and reference fields, and the figures of them all."""
    per_record = score_all(task.metric, replies, [gold(r) for r in records], [r["references"] for r in records],
                           task.settings)
    means = aggregate(per_record)
    return Scores(per_record, means, headline(per_record, means, task.task_metric))


def headline(per_record: list[dict], means: dict, metric: TaskMetric) -> dict:
    """The headline figure first, with its 95% interval, then the other means and the sample count."""
    figures = dict(means)
    low, high = interval([r[metric.primary] for r in per_record], metric.binary)
    return {metric.primary: figures.pop(metric.primary), f"{metric.primary}_ci_low": round(low, 4),
            f"{metric.primary}_ci_high": round(high, 4), **figures, "samples": len(per_record)}
