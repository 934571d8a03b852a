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

How the run is launched (processes, distributed type) and the training code decide as well; they
are kept beside the fingerprint in `run.json`, which the published output leaves out (it says how
the run was made, not what it holds). A newest checkpoint that cannot be read (a kill mid-save, a
full disk) is skipped for the one before it, said in one line. Only folders the stage made (they
hold its fingerprint) are ever deleted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import struct
import zipfile
from pathlib import Path

from sft.files import sha256_of, write_text
from sft.params import UserError

FINGERPRINT = "fingerprint.json"
COMPLETE = "complete.json"  # written when a run ends; a finished run is never resumed
SET_ASIDE = "set_aside.json"  # in a stale run: when it was set aside (an order number) and why
RUN = "run.json"  # how the run is launched and which code trains it; not published


def fingerprint(params: dict, inputs: list[Path]) -> str:
    """One digest of the resolved params and the bytes of every input file."""
    files = sorted(p for path in inputs for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    payload = {"params": params, "files": {str(p): sha256_of(p) for p in files}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def code_digest(files: list[Path]) -> str:
    """One digest of the source files that train: an edit to them is another run."""
    return hashlib.sha256(json.dumps({p.name: sha256_of(p) for p in files}, sort_keys=True).encode()).hexdigest()


def checkpoints(out: Path) -> list[Path]:
    """Checkpoints with a trainer state, newest first."""
    steps = [(int(m.group(1)), p) for p in out.glob("checkpoint-*")
             if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and (p / "trainer_state.json").is_file()]
    return [p for _, p in sorted(steps, reverse=True)]


def last_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint that can be read whole; a broken newer one is named and skipped."""
    for checkpoint in checkpoints(out):
        if (broken := unreadable(checkpoint)) is None:
            return checkpoint
        print(f"[train] {checkpoint} cannot be resumed from ({broken}); trying the one before it", flush=True)
    return None


def unreadable(checkpoint: Path) -> str | None:
    """Why a checkpoint is cut short, or None: its JSON parses, each safetensors file is as long as
    its header says, each torch file is a whole zip archive."""
    for path in sorted(checkpoint.iterdir()):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".safetensors" and not whole_safetensors(path):
                return f"{path.name} is cut short"
            elif path.suffix in (".pt", ".pth", ".bin") and not whole_zip(path):
                return f"{path.name} is cut short"
        except (OSError, ValueError, RecursionError) as e:
            return f"{path.name}: {type(e).__name__}"
    state = read_json(checkpoint / "trainer_state.json")
    if not isinstance(state.get("global_step"), int) or not isinstance(state.get("log_history", []), list):
        return "trainer_state.json holds no trainer state"
    return None


def whole_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return False
        size = struct.unpack("<Q", head)[0]
        if size > 100_000_000:
            return False
        header = json.loads(f.read(size))
    if not isinstance(header, dict):  # a table of tensors, or no safetensors file at all
        return False
    offsets = [v.get("data_offsets") if isinstance(v, dict) else None for k, v in header.items() if k != "__metadata__"]
    if not all(isinstance(o, list) and len(o) == 2 and all(isinstance(n, int) and n >= 0 for n in o) for o in offsets):
        return False
    return path.stat().st_size == 8 + size + max((o[1] for o in offsets), default=0)


def whole_zip(path: Path) -> bool:
    # A cut archive has lost its central directory, at the end; reading every member would cost
    # seconds a gigabyte for what truncation already shows.
    try:
        with zipfile.ZipFile(path):
            return True
    except zipfile.BadZipFile:
        return False


def plan(out: Path, digest: str, keep: int = 2, run: dict | None = None) -> Path | None:
    """The checkpoint to resume from, or None after making `out` a clean, fingerprinted folder
    (an earlier run's checkpoints set aside in the stale folder, never deleted). `run`: how this run
    is launched and the digest of its code; a different one starts clean too."""
    run = run or {}
    if out.is_dir():
        old, old_run = read_json(out / FINGERPRINT).get("fingerprint"), read_json(out / RUN)
        if old is None and any(out.iterdir()):
            raise UserError(f"{out} exists and was not made by the train stage (no {FINGERPRINT}); move it away "
                            "or pass another --scratch")
        checkpoint = last_checkpoint(out) if old == digest and old_run == run else None
        if checkpoint is not None and not (out / COMPLETE).is_file():
            print(f"[train] resuming from {checkpoint} (same params, data, launch and code)", flush=True)
            return checkpoint
        why = ("they come from other params or data" if old != digest else
               "it ran with another launch or other training code" if old_run != run else
               "the last run finished" if (out / COMPLETE).is_file() else "none of its checkpoints can be read")
        if any(out.glob("checkpoint-*")):
            kept = set_aside(out, old or "unknown", why, keep)
            print(f"[train] not resuming from {out}: {why}; starting clean. Its checkpoints are kept in "
                  f"{kept}" + (" (train.keep_stale: 0 deletes them)" if keep == 0 else ""), flush=True)
        else:
            shutil.rmtree(out)  # the stage's own folder, no checkpoint in it: nothing of value
    out.mkdir(parents=True)
    write_text(out / FINGERPRINT, json.dumps({"fingerprint": digest}) + "\n")
    write_text(out / RUN, json.dumps(run, sort_keys=True) + "\n")
    return None


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


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
    write_text(dest / SET_ASIDE, json.dumps({"order": order, "from": str(out), "why": why}) + "\n")
    for _, old in sorted(stale_runs(stale), reverse=True)[keep:]:
        shutil.rmtree(old)
    return dest


def stale_runs(stale: Path) -> list[tuple[int, Path]]:
    """The runs set aside here, with their order; a folder whose marker cannot be read is not the
    stage's to prune (it is named once and left alone)."""
    runs = []
    for run in sorted(stale.iterdir()) if stale.is_dir() else []:
        marker = run / SET_ASIDE
        if not marker.is_file():
            continue
        order = read_json(marker).get("order")
        if isinstance(order, int) and not isinstance(order, bool):
            runs.append((order, run))
        else:
            print(f"[train] {marker} cannot be read: {run} is left alone (delete it yourself if unwanted)", flush=True)
    return runs


def mark_complete(out: Path, summary: dict) -> None:
    write_text(out / COMPLETE, json.dumps(summary, indent=2) + "\n")


def publish(scratch: Path, out: Path) -> None:
    """The finished run becomes the stage's output: one rename, or, from another filesystem, a
    copy beside the output renamed into place (the scratch folder removed only after)."""
    (scratch / RUN).unlink(missing_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        replace_folder(scratch, out)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        staged = out.with_name(f".{out.name}.copy")
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(scratch, staged, symlinks=True)
        replace_folder(staged, out)
        shutil.rmtree(scratch)


def replace_folder(new: Path, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    os.replace(new, out)
