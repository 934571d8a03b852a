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

from sft import baselines
from sft.hub import hub_folder
from sft.params import run


def main() -> None:
    r = baselines.request("hub", "Evaluate a pinned hub model as a baseline.")

    model, revision = r.entry["model_name_or_path"], r.entry["revision"]
    folder = hub_folder(f"others.hub.{r.name}", model, revision)
    baselines.evaluate_other(r, folder, {"model": model, "revision": revision})


if __name__ == "__main__":
    run(main)
