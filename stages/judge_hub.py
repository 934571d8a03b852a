"""judge_hub: a hub model, pinned by a commit, as judge of the base and fine-tuned replies.

    python -m stages.judge_hub --name gemma-12b --data data/prepared --predictions metrics/predictions --out metrics/judge

Reads `judge.hub.<name>` of params.yaml ({model_name_or_path, revision}) and the judge's settings;
judges and writes as judge_folder does. The snapshot comes from the Hugging Face cache, or is
downloaded where the hub answers; a judge that cannot be had fails in one line naming it, and
nothing else in the graph waits for it.
"""

from __future__ import annotations

from sft import verdicts
from sft.hub import hub_folder
from sft.params import run


def main() -> None:
    r = verdicts.request("hub", "Judge the test replies with a pinned hub model.")

    model, revision = r.entry["model_name_or_path"], r.entry["revision"]
    folder = hub_folder(f"judge.hub.{r.name}", model, revision)
    verdicts.judge_and_write(r, folder, {"model": model, "revision": revision})


if __name__ == "__main__":
    run(main)
