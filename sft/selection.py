"""The select section of params.yaml: how the best checkpoint is chosen (a figure of the
trainer's logs, or of the task metric on generated validation replies)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sft.metrics import greater_is_better as figure_greater_is_better
from sft.models import DTYPES
from sft.params import UserError, one_of, ranged
from sft.scoring import gold, scores


@dataclass
class SelectParams:
    metric: str = "eval_loss"  # a key of the trainer's evaluation logs, or a figure of the task metric
    greater_is_better: bool | None = None  # None: false for names ending in 'loss' or 'error_rate', true otherwise
    samples: int = ranged(32, low=1)  # validation prompts generated per checkpoint when selecting by a task figure
    max_new_tokens: int = ranged(64, low=1)  # a reply longer than this is cut (and most likely wrong)
    batch_size: int = ranged(16, low=1)  # prompts generated together
    dtype: str = "float32"  # the candidates' weights while generating

    def __post_init__(self):
        one_of("select", "dtype", self.dtype, DTYPES)


def greater_is_better(p: SelectParams) -> bool:
    return p.greater_is_better if p.greater_is_better is not None else figure_greater_is_better(p.metric)


def candidates(train_dir: Path, metric: str) -> list[dict]:
    """Every evaluation whose step has a saved checkpoint, oldest first (with `metric` if logged)."""
    state_file = train_dir / "trainer_state.json"
    if not state_file.is_file():
        raise UserError(f"{state_file} is missing; run the train stage first (dvc repro train)")
    history = json.loads(state_file.read_text())["log_history"]
    rows = []
    for entry in history:
        if "eval_loss" not in entry and metric not in entry:
            continue
        checkpoint = train_dir / f"checkpoint-{entry['step']}"
        if checkpoint.is_dir():
            rows.append({"checkpoint": str(checkpoint), "step": entry["step"], "epoch": entry.get("epoch"),
                         **{k: entry[k] for k in ("eval_loss", metric) if k in entry}})
    if not rows:
        logged = sorted({k for e in history for k in e})
        raise UserError(f"{state_file}: no saved checkpoint has an evaluation; logged keys: {logged}. "
                        "Set train.save_strategy and train.eval_strategy alike (both 'epoch')")
    return rows


def check_metric(p: SelectParams, task, records: list[dict]) -> None:
    """Before any checkpoint generates: the figures the task metric gives, from the first gold
    scored against itself."""
    if not records:
        raise UserError("validation.jsonl has no records: select by a task figure needs some (or use eval_loss)")
    figures = scores(task, [gold(records[0])], records[:1]).means
    if p.metric not in figures:
        raise UserError(f"params.yaml: select.metric '{p.metric}' is neither a trainer log key nor a figure of "
                        f"the task metric {task.metric}: {sorted(figures)} (or eval_loss)")


def best(rows: list[dict], p: SelectParams) -> dict:
    # Ties go to the earlier checkpoint: fewer steps, same figure.
    sign = -1 if greater_is_better(p) else 1
    return min(rows, key=lambda r: (sign * r[p.metric], r["step"]))
