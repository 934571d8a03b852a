"""select: pick the best epoch checkpoint, by validation loss or by the task metric.

    python -m stages.select --train models/train --base models/base --data data/prepared \
        --out metrics/select.json

Reads `select:` of params.yaml. The trainer writes `trainer_state.json` with one evaluation
per epoch; every checkpoint saved at such a step (and not rotated out by save_total_limit) is a
candidate. `select.metric` is a key of the trainer's evaluation logs (`eval_loss`, the
default), or a figure of the task metric (`execution_accuracy`, `accuracy`, `rougeL`, ...):
then each candidate generates greedily on the first `select.samples` validation prompts and
is scored, so the choice costs a few minutes, not a test-set evaluation. The choice and the
table of candidates are DVC metrics; merge reads the choice, so nobody edits checkpoint paths.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sft.checkpoints import base_as_trained, merged, trained_model, training_method
from sft.files import read_jsonl, write_json
from sft.generation import Settings, replies
from sft.params import UserError, load, run
from sft.scoring import gold, scores
from sft.selection import SelectParams
from sft.task import read_task


def greater_is_better(p: SelectParams) -> bool:
    return p.greater_is_better if p.greater_is_better is not None else not p.metric.endswith("loss")


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


def task_figures(rows: list[dict], p: SelectParams, base: str, data: Path) -> list[dict]:
    """Each candidate scored by the task metric on the first `p.samples` validation records."""
    records = read_jsonl(data / "validation.jsonl")[:p.samples]
    task = read_task(data)
    check_metric(p, task, records)
    method = training_method()
    settings = Settings(p.max_new_tokens, p.batch_size, p.dtype)
    scored = []
    for n, row in enumerate(rows, 1):
        # Each candidate as trained: a QLoRA adapter on the 4-bit base (not merged: that base cannot
        # take it without requantizing); a LoRA adapter merged into the base, which generates faster.
        model, tokenizer = trained_model(base, Path(row["checkpoint"]), p.dtype, **base_as_trained(method))
        model = model if method == "qlora" else merged(model, "select")
        answered, _ = replies((model, tokenizer), [r["prompt"] for r in records], settings,
                              label=f"[select] candidate {n} of {len(rows)}: generating")
        figures = scores(task, answered, records).means
        print(f"[select] {row['checkpoint']}: {p.metric} {figures[p.metric]:.4f} on {len(records)} "
              "validation records", flush=True)
        scored.append({**row, p.metric: figures[p.metric], "select_samples": len(records)})
    return scored


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


def main() -> None:
    ap = argparse.ArgumentParser(description="Choose the best checkpoint.")
    ap.add_argument("--train", default="models/train")
    ap.add_argument("--base", default="models/base")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="metrics/select.json")
    args = ap.parse_args()
    p = load("select", SelectParams)

    rows = candidates(Path(args.train), p.metric)
    if any(p.metric not in r for r in rows):  # not a trainer log key: a figure of the task metric
        rows = task_figures(rows, p, args.base, Path(args.data))
    choice = best(rows, p)
    write_json(args.out, {"checkpoint": choice["checkpoint"], "step": choice["step"], "epoch": choice["epoch"],
                          p.metric: choice[p.metric], "candidates": rows})
    print(f"[select] {choice['checkpoint']} ({p.metric} {choice[p.metric]:.4f}) of {len(rows)} candidates", flush=True)


if __name__ == "__main__":
    run(main)
