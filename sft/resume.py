"""Resume an interrupted train stage, and only one whose checkpoints match its params and data.

A run writes its checkpoints to a scratch folder beside its output (`models/train.partial`),
which DVC does not know and so never deletes; only a finished run is renamed into place as
`models/train`. So a `dvc repro` after a kill finds the checkpoints, and the output itself is an
ordinary one that DVC's run-cache can restore. A fingerprint of everything the run depends on
decides: the same -> resume from the last checkpoint; different, or the last run finished ->
start clean (said in the log).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from sft.files import sha256_of

FINGERPRINT = "fingerprint.json"
COMPLETE = "complete.json"  # written when a run ends; a finished run is never resumed


def fingerprint(params: dict, inputs: list[Path]) -> str:
    """One digest of the resolved params and the bytes of every input file."""
    files = sorted(p for path in inputs for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    payload = {"params": params, "files": {str(p): sha256_of(p) for p in files}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def last_checkpoint(out: Path) -> Path | None:
    steps = [(int(m.group(1)), p) for p in out.glob("checkpoint-*")
             if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and (p / "trainer_state.json").is_file()]
    return max(steps)[1] if steps else None


def plan(out: Path, digest: str) -> Path | None:
    """The checkpoint to resume from, or None after making `out` a clean, fingerprinted folder."""
    if out.is_dir():
        recorded = out / FINGERPRINT
        same = recorded.is_file() and json.loads(recorded.read_text()).get("fingerprint") == digest
        checkpoint = last_checkpoint(out)
        if same and checkpoint is not None and not (out / COMPLETE).is_file():
            print(f"[train] resuming from {checkpoint} (same params and data)", flush=True)
            return checkpoint
        if any(out.iterdir()):
            why = "the last run finished" if same else "they come from other params or data"
            print(f"[train] not resuming from {out}: {why}; starting clean", flush=True)
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / FINGERPRINT).write_text(json.dumps({"fingerprint": digest}) + "\n")
    return None


def mark_complete(out: Path, summary: dict) -> None:
    (out / COMPLETE).write_text(json.dumps(summary, indent=2) + "\n")


def publish(scratch: Path, out: Path) -> None:
    """The finished run becomes the stage's output in one rename (no copy of the checkpoints)."""
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(scratch, out)
