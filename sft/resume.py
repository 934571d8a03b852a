"""Resume an interrupted train stage, and only one whose checkpoints match its params and data.

A run writes its checkpoints to a scratch folder beside its output (`models/train.partial`),
which DVC does not know and so never deletes; only a finished run is renamed into place as
`models/train`. So a `dvc repro` after a kill finds the checkpoints, and the output itself is an
ordinary one that DVC's run-cache can restore. A fingerprint of everything the run depends on
decides: the same -> resume from the last checkpoint; different, or the last run finished ->
start clean (said in the log). Starting clean never throws checkpoints away: the old run is
moved aside to `models/train.stale/<fingerprint>/` (the path is printed), and only the newest
`train.keep_stale` runs set aside are kept. Raising `train.epochs` after an interruption starts
clean too: the learning-rate schedule spans all the steps, so a resumed run would not be the run
the new params describe; the interrupted one waits in train.stale.
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
SET_ASIDE = "set_aside.json"  # in a stale run: when it was set aside (an order number) and why


def fingerprint(params: dict, inputs: list[Path]) -> str:
    """One digest of the resolved params and the bytes of every input file."""
    files = sorted(p for path in inputs for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    payload = {"params": params, "files": {str(p): sha256_of(p) for p in files}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def last_checkpoint(out: Path) -> Path | None:
    steps = [(int(m.group(1)), p) for p in out.glob("checkpoint-*")
             if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and (p / "trainer_state.json").is_file()]
    return max(steps)[1] if steps else None


def plan(out: Path, digest: str, keep: int = 2) -> Path | None:
    """The checkpoint to resume from, or None after making `out` a clean, fingerprinted folder
    (an earlier run's checkpoints set aside in the stale folder, never deleted)."""
    if out.is_dir():
        recorded = out / FINGERPRINT
        old = json.loads(recorded.read_text()).get("fingerprint") if recorded.is_file() else None
        checkpoint = last_checkpoint(out)
        if old == digest and checkpoint is not None and not (out / COMPLETE).is_file():
            print(f"[train] resuming from {checkpoint} (same params and data)", flush=True)
            return checkpoint
        why = "the last run finished" if old == digest else "they come from other params or data"
        if any(out.glob("checkpoint-*")):
            kept = set_aside(out, old or "unknown", why, keep)
            print(f"[train] not resuming from {out}: {why}; starting clean. Its checkpoints are kept in "
                  f"{kept}" + (" (train.keep_stale: 0 deletes them)" if keep == 0 else ""), flush=True)
        else:
            shutil.rmtree(out)  # no checkpoint in it: nothing of value
    out.mkdir(parents=True)
    (out / FINGERPRINT).write_text(json.dumps({"fingerprint": digest}) + "\n")
    return None


def stale_folder(out: Path) -> Path:
    """Where runs that no longer match are kept: models/train.partial -> models/train.stale."""
    name = out.name.removesuffix(".partial")
    return out.with_name(f"{name}.stale")


def set_aside(out: Path, fingerprint_of_run: str, why: str, keep: int) -> Path:
    """Moves `out` to stale/<fingerprint> (one rename) and prunes to the newest `keep` runs."""
    stale = stale_folder(out)
    stale.mkdir(parents=True, exist_ok=True)
    runs = stale_runs(stale)
    order = max((n for n, _ in runs), default=0) + 1
    dest = stale / fingerprint_of_run[:16]
    if dest.exists():
        dest = stale / f"{fingerprint_of_run[:16]}-{order}"
    os.replace(out, dest)
    (dest / SET_ASIDE).write_text(json.dumps({"order": order, "from": str(out), "why": why}) + "\n")
    for _, old in sorted(stale_runs(stale), reverse=True)[keep:]:
        shutil.rmtree(old)
    return dest


def stale_runs(stale: Path) -> list[tuple[int, Path]]:
    runs = []
    for run in stale.iterdir() if stale.is_dir() else []:
        marker = run / SET_ASIDE
        if marker.is_file():
            runs.append((json.loads(marker.read_text())["order"], run))
    return runs


def mark_complete(out: Path, summary: dict) -> None:
    (out / COMPLETE).write_text(json.dumps(summary, indent=2) + "\n")


def publish(scratch: Path, out: Path) -> None:
    """The finished run becomes the stage's output in one rename (no copy of the checkpoints)."""
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(scratch, out)
