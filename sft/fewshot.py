"""Few-shot prompts: a second baseline, the base model shown k solved train examples as earlier
turns of the chat before each test prompt, rendered by the same templates and chat template.

The examples are drawn once, seeded, from the train split, and are the same for every test prompt
(as a fixed k-shot prompt is): the baseline then differs from the zero-shot one by the examples
alone. The test prompt's own system message stays first; the examples' are left out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from sft.files import read_jsonl
from sft.params import UserError, ranged


@dataclass
class FewShotParams:
    shots: int = ranged(3, low=0)  # solved train examples shown before each test prompt
    seed: int = 0  # which ones: drawn once, the same for every test prompt


def examples(records: list[dict], shots: int, seed: int, where: str) -> list[dict]:
    """`shots` records drawn from `records` (a split of prepare's), in the order drawn."""
    if shots > len(records):
        raise UserError(f"fewshot.shots is {shots} but {where} holds {len(records)} records; lower fewshot.shots")
    return random.Random(seed).sample(records, shots)


def train_examples(data: Path, p: FewShotParams) -> list[dict]:
    """The solved examples every test prompt is shown: drawn from prepare's train split in `data`."""
    train = data / "train.jsonl"
    return examples(read_jsonl(train), p.shots, p.seed, str(train))


def turns(record: dict) -> list[dict]:
    """A solved example as chat turns: its prompt without the system message, then its answer."""
    return [m for m in record["prompt"] if m["role"] != "system"] + record["completion"]


def with_examples(prompt: list[dict], shown: list[dict]) -> list[dict]:
    system = [m for m in prompt if m["role"] == "system"]
    rest = [m for m in prompt if m["role"] != "system"]
    return system + [m for r in shown for m in turns(r)] + rest


def prompts(records: list[dict], shown: list[dict]) -> list[list[dict]]:
    """Each record's prompt with the solved examples before it."""
    return [with_examples(r["prompt"], shown) for r in records]
