"""other_folder: a model folder (an earlier fine-tune, a model downloaded by hand) as a baseline.

    python -m stages.other_folder --name earlier --data data/prepared --out metrics

Reads `others.folders.<name>` of params.yaml (the folder; dvc.yaml lists it as a dependency, so a
changed folder is evaluated again) and `evaluate:` (how to generate: as the other evaluations do).
Writes what evaluate writes, under others/: metrics/others/<name>.json (with the fine-tuned model
against it, paired on the same items), metrics/predictions/others/<name>.jsonl,
metrics/confusion/others/<name>.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sft import others
from sft.evaluation import EvaluateParams
from sft.params import UserError, load, run


def main() -> None:
    ap = argparse.ArgumentParser(description="Evaluate a model folder as a baseline.")
    ap.add_argument("--name", required=True, help="its key under others.folders of params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="metrics")
    args = ap.parse_args()
    o = load("others", others.OthersParams)
    p = load("evaluate", EvaluateParams)
    if args.name not in o.folders:
        raise UserError(f"params.yaml: others.folders has no '{args.name}'")

    folder = o.folders[args.name]
    if not (Path(folder) / "config.json").is_file():
        raise UserError(f"params.yaml: others.folders.{args.name} is {folder!r}, which holds no config.json: "
                        "not a model folder (write the folder that holds config.json and the weights)")
    others.evaluate_other(args.name, folder, {"model": folder}, Path(args.data), Path(args.out), p)


if __name__ == "__main__":
    run(main)
