"""The task a dataset is for: prompts/<dataset>/task.yaml names its metric and the record fields
the metric needs; prepare copies it to data/prepared/task.json, which later stages read."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sft.metrics import TaskMetric, metric_named
from sft.params import UserError

TASK_FILE = "task.json"


@dataclass
class Task:
    metric: str
    references: list[str] = field(default_factory=list)

    @property
    def task_metric(self) -> TaskMetric:
        return metric_named(self.metric)


def load_task(folder: str | Path) -> Task:
    """The task declared in prompts/<dataset>/task.yaml; an unknown metric stops here."""
    path = Path(folder) / "task.yaml"
    if not path.is_file():
        raise UserError(f"{path} is missing; it names the task's metric (see prompts/sql/task.yaml)")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(data) - {"metric", "references"}
    if unknown:
        raise UserError(f"{path}: unknown keys {sorted(unknown)}; valid: metric, references")
    if "metric" not in data:
        raise UserError(f"{path}: no 'metric:' key")
    try:
        metric_named(data["metric"])
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    return Task(metric=data["metric"], references=list(data.get("references") or []))


def task_json(task: Task) -> dict:
    return dataclasses.asdict(task)


def read_task(data: str | Path) -> Task:
    """The task of a prepared dataset folder (its task.json)."""
    path = Path(data) / TASK_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing; run the prepare stage first (dvc repro prepare)")
    return Task(**json.loads(path.read_text(encoding="utf-8")))
