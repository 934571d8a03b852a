"""Other models as baselines (`others:` of params.yaml, its schema in sft/others.py): a hub model
pinned by a commit, or a model folder, evaluated on the test split with `evaluate:`'s settings and
paired with the fine-tuned model on the same items.

dvc.yaml evaluates each in a stage of its own (other_hub@<name>, other_folder@<name>), so adding
one evaluates only it, and one that cannot load fails alone, in one line: compare, forgetting and
the stages before them never read it (the card stage does, so the cards wait for it).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from sft.evaluation import EvaluateParams, evaluate
from sft.files import read_jsonl, write_json
from sft.others import OthersParams
from sft.pairing import OTHERS, paired_with_finetuned
from sft.params import PARAMS_FILE, UserError, load
from sft.task import read_task


@dataclass
class Request:
    """What an other-model stage is asked to do: which model (its key under others.<kind>), its
    entry there, where the prepared data are and where the outputs go, and how to generate."""
    name: str
    entry: dict | str  # hub: {model_name_or_path, revision}; folders: the folder
    data: Path
    out: Path
    evaluate: EvaluateParams


def request(kind: str, description: str) -> Request:
    """The stage's command line and params: `--name` must be a key of others.<kind>."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--name", required=True, help=f"its key under others.{kind} of params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="metrics")
    args = ap.parse_args()
    listed = getattr(load("others", OthersParams), kind)
    evaluate_params = load("evaluate", EvaluateParams)
    if args.name not in listed:
        raise UserError(f"{PARAMS_FILE}: others.{kind} has no '{args.name}'")
    return Request(args.name, listed[args.name], Path(args.data), Path(args.out), evaluate_params)


def evaluate_other(r: Request, model_dir: str, identity: dict) -> dict:
    """Evaluate one other model as evaluate does and write out/others/<name>.json: who it is, its
    task figures, and the fine-tuned model against it."""
    records = read_jsonl(r.data / "test.jsonl")
    task = read_task(r.data)
    figures = evaluate(model_dir, f"{OTHERS}/{r.name}", records, [x["prompt"] for x in records], task, r.evaluate,
                       r.out)
    against = paired_with_finetuned(r.out / "predictions", r.name, task.task_metric)
    result = {**identity, **figures, "against_finetuned": against}
    write_json(r.out / OTHERS / f"{r.name}.json", result)
    print(f"[{OTHERS}] {r.name}: fine-tuned minus it {against}", flush=True)
    return result
