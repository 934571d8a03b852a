"""What prepare hands to train: the token ids and loss masks of each trained split, exactly as
SFTTrainer takes them (trl skips its own tokenization when `input_ids` are present), and the
settings they were made with. Prepare tokenizes once, counts and audits those same tokens, and
train reads them; train tokenizes nothing and reads no other stage's params.

    data/prepared/train.tokens.jsonl       {"input_ids": [...], "assistant_masks": [...]} a record
    data/prepared/validation.tokens.jsonl  (in the order of train.jsonl and validation.jsonl)
    data/prepared/tokens.json              {"max_length": ..., "train_on": ...}
"""

from __future__ import annotations

import json
from pathlib import Path

from sft.files import write_json, write_text
from sft.params import UserError

TRAINED_SPLITS = ("train", "validation")
SETTINGS_FILE = "tokens.json"


def tokens_file(data: str | Path, split: str) -> Path:
    return Path(data) / f"{split}.tokens.jsonl"


def write(data: str | Path, splits: dict[str, list], max_length: int, train_on: str) -> None:
    """Each trained split's records (sft.tokens.Tokenized: `input_ids`, `assistant_masks`) as one
    compact JSON line a record. Read off the records, not copied (dataclasses.asdict would deep-copy
    every id: 3x the whole stage's time at 100k records)."""
    for split in TRAINED_SPLITS:
        write_text(tokens_file(data, split), "".join(
            json.dumps({"input_ids": r.input_ids, "assistant_masks": r.assistant_masks}, separators=(",", ":")) + "\n"
            for r in splits[split]))
    write_json(Path(data) / SETTINGS_FILE, {"max_length": max_length, "train_on": train_on})


def token_rows(data: str | Path, split: str) -> list[dict]:
    path = tokens_file(data, split)
    if not path.is_file():
        raise UserError(f"{path} is missing; run the prepare stage first (dvc repro prepare), which writes the "
                        "token ids train reads")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def settings(data: str | Path) -> dict:
    """max_length and train_on, as prepare applied them (prepare.max_length, prepare.train_on)."""
    path = Path(data) / SETTINGS_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing; run the prepare stage first (dvc repro prepare)")
    return json.loads(path.read_text(encoding="utf-8"))
