"""Stand-in records for a rehearsal: the real dataset's columns and lengths, from
prompts/<dataset>/standin.yaml, so no dataset is named in code.

The spec gives the splits the real dataset has (and how many records each), a few literal rows
holding every field the templates and task read (cycled), and `filler`: fields lengthened with
seeded words drawn from their own text to a spread of lengths like the real one's (skewed to the
short end, with a long tail), put before the field's own text so its ending (options, "the
answer is (X)") stays last. `messages.<role>` lengthens the turns of that role. `unique` names
fields that get the record's number, so cycled rows do not repeat a prompt (prepare would drop
train records whose prompt is a test prompt).
"""

from __future__ import annotations

import copy
import random
import re
from pathlib import Path

from sft.params import read_yaml

SPEC = "standin.yaml"


def load_spec(prompts: str | Path) -> dict:
    path = Path(prompts) / SPEC
    if not path.is_file():
        raise SystemExit(f"{path} is missing: a rehearsal needs stand-in records of the dataset's shape "
                         "(see prompts/headnotes/standin.yaml)")
    return read_yaml(path)


def length(low: int, high: int, rng: random.Random) -> int:
    return low + int((high - low) * rng.random() ** 2)  # most near `low`, a tail up to `high`


def lengthened(text: str, words: int, rng: random.Random) -> str:
    pool = re.findall(r"\w+", text) or ["lorem"]
    return " ".join(rng.choice(pool) for _ in range(words)) + "\n\n" + text


def record(row: dict, filler: dict, rng: random.Random) -> dict:
    out = copy.deepcopy(row)
    for key, spec in filler.items():
        low, high = spec["words"]
        if key.startswith("messages."):
            for turn in out["messages"]:
                if turn["role"] == key.split(".", 1)[1]:
                    turn["content"] = lengthened(turn["content"], length(low, high, rng), rng)
        else:
            out[key] = lengthened(out[key], length(low, high, rng), rng)
    return out


def records(spec: dict, seed: int = 0) -> dict[str, list[dict]]:
    """Per split, the stand-in records (ids made unique where the rows carry one)."""
    rng = random.Random(seed)
    out, n = {}, 0
    for split, count in spec["splits"].items():
        out[split] = []
        for _ in range(count):
            r = record(spec["rows"][n % len(spec["rows"])], spec.get("filler") or {}, rng)
            if "id" in r:
                r["id"] = n
            for key in spec.get("unique", []):
                r[key] = f"{r[key]} (case {n})"
            out[split].append(r)
            n += 1
    return out


def texts(records_by_split: dict[str, list[dict]]) -> list[str]:
    """Every string in the records: what the stand-in tokenizer learns its vocabulary from."""
    found = []

    def walk(value):
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(records_by_split)
    return found
