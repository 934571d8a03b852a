"""other_hub: a model from the Hugging Face hub, pinned by a commit, as a baseline of its own.

    python -m stages.other_hub --name gemma-270m --data data/prepared --out metrics

Reads `others.hub.<name>` of params.yaml ({model_name_or_path, revision}) and `evaluate:` (how to
generate: as the other evaluations do). The snapshot comes from the Hugging Face cache, or is
downloaded where the hub answers; a model that cannot be had fails in one line naming it, and
nothing else in the graph waits for it but the model card. Writes what evaluate writes, under
others/: metrics/others/<name>.json (with the fine-tuned model against it, paired on the same
items), metrics/predictions/others/<name>.jsonl, metrics/confusion/others/<name>.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sft import others
from sft.evaluation import EvaluateParams
from sft.params import UserError, load, run


def main() -> None:
    ap = argparse.ArgumentParser(description="Evaluate a pinned hub model as a baseline.")
    ap.add_argument("--name", required=True, help="its key under others.hub of params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="metrics")
    args = ap.parse_args()
    o = load("others", others.OthersParams)
    p = load("evaluate", EvaluateParams)
    if args.name not in o.hub:
        raise UserError(f"params.yaml: others.hub has no '{args.name}'")

    model, revision = o.hub[args.name]["model_name_or_path"], o.hub[args.name]["revision"]
    folder = others.hub_folder(args.name, model, revision)
    others.evaluate_other(args.name, folder, {"model": model, "revision": revision}, Path(args.data),
                          Path(args.out), p)


if __name__ == "__main__":
    run(main)
