"""Replies kept before they are scored, so that a scoring failure, a kill or a change of metric
never generates them again.

A model's replies to a split live in a scratch file beside the stage's outputs (DVC does not know
it, like models/train.partial), named by a digest of everything that decides them: every file of
the model folder (weights, tokenizer, chat template, generation config), the prompts, the
generation settings, the backend and the generation code. Replies are appended a batch at a time
as they come, so a run killed halfway keeps what it generated; a torn last line is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from sft.files import sha256_of


def digest(model_dir: str | Path, prompts: list, settings: dict, code: list[Path]) -> str:
    model = Path(model_dir)
    files = {str(p.relative_to(model)): sha256_of(p) for p in sorted(model.rglob("*")) if p.is_file()}
    payload = {"model": files, "prompts": prompts, "settings": settings,
               "code": {p.name: sha256_of(p) for p in code}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def as_text(reply: str) -> str:
    """A reply as valid Unicode: lone surrogates (which no UTF-8 writer, Arrow included, accepts)
    become U+FFFD, as a UTF-8 decoder makes of bytes it cannot read."""
    return reply.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


class Kept:
    """The replies of one model to one split, kept in `folder/<name>-<digest>.jsonl`."""

    def __init__(self, folder: str | Path, name: str, key: str, count: int):
        self.path = Path(folder) / f"{name}-{key[:24]}.jsonl"
        self.count = count

    def known(self) -> dict[int, str]:
        """Replies already generated, by prompt index; a line that does not parse (a kill mid-write)
        is skipped."""
        found: dict[int, str] = {}
        if not self.path.is_file():
            return found
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and isinstance(row.get("i"), int) and 0 <= row["i"] < self.count \
                        and isinstance(row.get("reply"), str):
                    found[row["i"]] = row["reply"]
        return found

    def keep(self, replies: dict[int, str]) -> None:
        """Append replies (and make them durable) before anything scores them."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for i, reply in sorted(replies.items()):
                # ensure_ascii: a lone surrogate in a reply is kept as an escape, never an encoding error
                f.write(json.dumps({"i": i, "reply": reply}, ensure_ascii=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
