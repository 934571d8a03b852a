"""select: pick the best epoch checkpoint, by validation loss or by the task metric.

    python -m stages.select --train models/train --base models/base --data data/prepared \
        --out metrics/select.json

Reads `select:` of params.yaml, and what train decided (models/trained.json: a candidate
generates as it was trained, an adapter on the base, in 4-bit for QLoRA). The trainer writes `trainer_state.json` with one evaluation
per epoch; every checkpoint saved at such a step (and not rotated out by save_total_limit) is a
candidate. `select.metric` is a key of the trainer's evaluation logs (`eval_loss`, the
default), or a figure of the task metric (`execution_accuracy`, `accuracy`, `rougeL`, ...):
then each candidate generates greedily on the first `select.samples` validation prompts and
is scored, so the choice costs a few minutes, not a test-set evaluation. The choice and the
table of candidates are DVC metrics; merge reads the choice, so nobody edits checkpoint paths.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sft import trained
from sft.checkpoints import merged, trained_model
from sft.files import read_jsonl, write_json
from sft.generation import Settings, replies
from sft.params import load, run
from sft.scoring import scores
from sft.selection import SelectParams, best, candidates, check_metric
from sft.task import read_task


def task_figures(rows: list[dict], p: SelectParams, base: str, data: Path, record: dict) -> list[dict]:
    """Each candidate scored by the task metric on the first `p.samples` validation records."""
    records = read_jsonl(data / "validation.jsonl")[:p.samples]
    task = read_task(data)
    check_metric(p, task, records)
    settings = Settings(p.max_new_tokens, p.batch_size, p.dtype)
    scored = []
    for n, row in enumerate(rows, 1):
        # Each candidate as trained: a QLoRA adapter on the 4-bit base (not merged: that base cannot
        # take it without requantizing); a LoRA adapter merged into the base, which generates faster.
        model, tokenizer = trained_model(base, Path(row["checkpoint"]), p.dtype, record)
        model = model if record["quantization"] else merged(model, "select")
        answered, _ = replies((model, tokenizer), [r["prompt"] for r in records], settings,
                              label=f"[select] candidate {n} of {len(rows)}: generating")
        figures = scores(task, answered, records).means
        print(f"[select] {row['checkpoint']}: {p.metric} {figures[p.metric]:.4f} on {len(records)} "
              "validation records", flush=True)
        scored.append({**row, p.metric: figures[p.metric], "select_samples": len(records)})
    return scored


def main() -> None:
    ap = argparse.ArgumentParser(description="Choose the best checkpoint.")
    ap.add_argument("--train", default="models/train")
    ap.add_argument("--trained", default="models/trained.json", help="what train decided: the method, the adapter")
    ap.add_argument("--base", default="models/base")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="metrics/select.json")
    args = ap.parse_args()
    p = load("select", SelectParams)
    record = trained.read(args.trained)

    rows = candidates(Path(args.train), p.metric)
    if any(p.metric not in r for r in rows):  # not a trainer log key: a figure of the task metric
        rows = task_figures(rows, p, args.base, Path(args.data), record)
    choice = best(rows, p)
    write_json(args.out, {"checkpoint": choice["checkpoint"], "step": choice["step"], "epoch": choice["epoch"],
                          p.metric: choice[p.metric], "candidates": rows})
    print(f"[select] {choice['checkpoint']} ({p.metric} {choice[p.metric]:.4f}) of {len(rows)} candidates", flush=True)


if __name__ == "__main__":
    run(main)
