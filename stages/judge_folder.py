"""judge_folder: a model folder as judge of the base and fine-tuned replies to the test prompts.

    python -m stages.judge_folder --name tiny --data data/prepared --predictions metrics/predictions --out metrics/judge

Reads `judge.folders.<name>` of params.yaml (the folder, a dependency of this stage) and the
judge's settings (`judge.rubric`, `judge.mode`, generation). pairwise: each test item's two replies
shown to the judge in both orders, a verdict counting only when both orders agree; score: each
reply rated 1-10 with the judge's reason (sft/verdicts.py). Writes metrics/judge/<name>.json (the
fine-tuned model's win rate with its interval, or both mean scores paired; the counts of ties,
flips and replies with no verdict) and metrics/judge/verdicts/<name>.jsonl.
"""

from __future__ import annotations

from sft import verdicts
from sft.params import run


def main() -> None:
    r = verdicts.request("folders", "Judge the test replies with a model folder.")
    verdicts.judge_and_write(r, r.entry, {"folder": r.entry})


if __name__ == "__main__":
    run(main)
