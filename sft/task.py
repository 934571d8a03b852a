"""The task a dataset is for: prompts/<dataset>/task.yaml names its metric, the record fields the
metric needs, and the metric's own settings (answer_match's `answer:`, json's `fields:`); prepare
checks it and copies it to data/prepared/task.json, which later stages read."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from sft.metrics import TaskMetric, metric_named
from sft.params import UserError, read_yaml

TASK_FILE = "task.json"


@dataclass
class Task:
    metric: str
    references: list[str] = field(default_factory=list)  # record fields the metric reads besides the gold
    settings: dict = field(default_factory=dict)  # the metric's own task.yaml keys

    @property
    def task_metric(self) -> TaskMetric:
        return metric_named(self.metric)


def load_task(folder: str | Path) -> Task:
    """The task declared in prompts/<dataset>/task.yaml; an unknown metric stops here."""
    path = Path(folder) / "task.yaml"
    if not path.is_file():
        raise UserError(f"{path} is missing; it names the task's metric (see prompts/sql/task.yaml)")
    try:
        data = read_yaml(path) or {}
    except UserError as e:
        raise UserError(f"{e}; quote regular expressions with single quotes") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: must be a mapping of keys (metric:, references:, and the metric's own)")
    if "metric" not in data:
        raise UserError(f"{path}: no 'metric:' key")
    if not isinstance(data["metric"], str):
        raise UserError(f"{path}: metric is {str(data['metric'])[:200]}; it must be one metric's name (e.g. metric: exact_match)")
    references = data.get("references") or []
    if not isinstance(references, list) or not all(isinstance(r, str) and r for r in references):
        raise UserError(f"{path}: references is {str(references)[:200]}; it must be a list of record field names, "
                        "e.g. references: [sql_context]")
    try:
        metric = metric_named(data["metric"])
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    valid = ("metric", "references", *metric.settings)
    unknown = sorted(str(k) for k in set(data) - set(valid))
    if unknown:
        raise UserError(f"{path}: unknown keys {unknown} for metric {metric.name}; valid: {', '.join(valid)}")
    settings = {k: data[k] for k in metric.settings if k in data}
    if metric.check:
        settings = metric.check(settings, str(path))
    references, field_read = list(references), (settings.get("answer") or {}).get("field")
    if field_read and field_read not in references:  # the gold answer read from a record field travels with it
        references.append(field_read)
    return Task(metric=metric.name, references=references, settings=settings)


def check_golds(task: Task, golds: list[str], references: list[dict], where: str) -> None:
    """A declared answer must be readable in the gold: one that matches no test record is a mistake."""
    readable = task.task_metric.gold_readable
    if readable and golds and not any(readable(g, r, **task.settings) for g, r in zip(golds, references, strict=True)):
        raise UserError(f"{where}: the declared answer is found in none of the {len(golds)} gold completions of "
                        f"the test split (first: {golds[0][-120:]!r}); fix answer.pattern or answer.field")


def task_json(task: Task) -> dict:
    return dataclasses.asdict(task)


def read_task(data: str | Path) -> Task:
    """The task of a prepared dataset folder (its task.json)."""
    path = Path(data) / TASK_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing; run the prepare stage first (dvc repro prepare)")
    task = Task(**json.loads(path.read_text(encoding="utf-8")))
    task.task_metric  # noqa: B018 - an unknown metric stops here, before minutes of generation
    return task
