"""other_folder: a model folder (an earlier fine-tune, a model downloaded by hand) as a baseline.

    python -m stages.other_folder --name earlier --data data/prepared --out metrics

Reads `others.folders.<name>` of params.yaml (the folder; dvc.yaml lists it as a dependency, so a
changed folder is evaluated again) and `evaluate:` (how to generate: as the other evaluations do).
Writes what evaluate writes, under others/: metrics/others/<name>.json (with the fine-tuned model
against it, paired on the same items), metrics/predictions/others/<name>.jsonl,
metrics/confusion/others/<name>.json.
"""

from __future__ import annotations

from pathlib import Path

from sft import baselines
from sft.params import UserError, run


def main() -> None:
    r = baselines.request("folders", "Evaluate a model folder as a baseline.")

    if not (Path(r.entry) / "config.json").is_file():
        raise UserError(f"params.yaml: others.folders.{r.name} is {r.entry!r}, which holds no config.json: "
                        "not a model folder (write the folder that holds config.json and the weights)")
    baselines.evaluate_other(r, r.entry, {"model": r.entry})


if __name__ == "__main__":
    run(main)
