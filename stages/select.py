"""select: pick the checkpoint with the best validation loss from the trainer's own record.

    python -m stages.select --train models/train --out metrics/select.json

Reads `select:` of params.yaml. The trainer writes `trainer_state.json` with one evaluation
per epoch; the checkpoint saved at that step is a candidate. Nobody edits checkpoint paths.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from stages.files import write_json
from stages.params import UserError, load, run


@dataclass
class SelectParams:
    metric: str = "eval_loss"  # a key of the trainer's evaluation logs
    greater_is_better: bool = False  # false for losses


def candidates(train_dir: Path, metric: str) -> list[dict]:
    """Every evaluation whose step has a saved checkpoint, oldest first."""
    state_file = train_dir / "trainer_state.json"
    if not state_file.is_file():
        raise UserError(f"{state_file} is missing; run the train stage first (dvc repro train)")
    history = json.loads(state_file.read_text())["log_history"]
    rows = []
    for entry in history:
        if metric not in entry:
            continue
        checkpoint = train_dir / f"checkpoint-{entry['step']}"
        if checkpoint.is_dir():
            rows.append({"checkpoint": str(checkpoint), "step": entry["step"], "epoch": entry.get("epoch"),
                         metric: entry[metric]})
    if not rows:
        logged = sorted({k for e in history for k in e})
        raise UserError(f"{state_file}: no checkpoint has a logged '{metric}'; logged keys: {logged}. "
                        "Set train.save_strategy and train.eval_strategy alike (both 'epoch') or fix select.metric")
    return rows


def best(rows: list[dict], p: SelectParams) -> dict:
    # Ties go to the earlier checkpoint: fewer steps, same figure.
    sign = -1 if p.greater_is_better else 1
    return min(rows, key=lambda r: (sign * r[p.metric], r["step"]))


def main() -> None:
    ap = argparse.ArgumentParser(description="Choose the best checkpoint.")
    ap.add_argument("--train", default="models/train")
    ap.add_argument("--out", default="metrics/select.json")
    args = ap.parse_args()
    p = load("select", SelectParams)

    rows = candidates(Path(args.train), p.metric)
    choice = best(rows, p)
    write_json(args.out, {"checkpoint": choice["checkpoint"], "step": choice["step"], "epoch": choice["epoch"],
                          p.metric: choice[p.metric], "candidates": rows})
    print(f"[select] {choice['checkpoint']} ({p.metric} {choice[p.metric]:.4f}) of {len(rows)} candidates", flush=True)


if __name__ == "__main__":
    run(main)
