"""What the train stage decided (models/trained.json): the method, the adapter, the base's
quantization, the trainer settings as applied, the global batch. Train writes it
(sft/training.py: decided); select, merge and the card read it instead of train: of params.yaml,
so a stage after train never restates train's defaults or guesses what a checkpoint is."""

from __future__ import annotations

import json
from pathlib import Path

from sft.params import UserError

KEYS = ("method", "adapter", "quantization", "loss", "world_size", "global_batch", "max_length", "train_on",
        "settings", "project_settings")


def read(path: str | Path) -> dict:
    """The record, every key present; a missing or older file is one line saying how to remake it."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} is missing; run the train stage first (dvc repro train)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not the train stage's JSON ({e}); rerun it (dvc repro train)") from None
    missing = [k for k in KEYS if not isinstance(record, dict) or k not in record]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: written by an older train stage; rerun it (dvc repro "
                        "train)")
    return record
