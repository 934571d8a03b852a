"""A throwaway copy of the repository to run the graph in, leaving the working tree untouched."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_repository(dest: Path, params: Path | None = None, source: Path = ROOT) -> Path:
    """The repository's files (tracked and untracked, not ignored) in a fresh git repository at
    `dest`, committed, with `params` as its params.yaml when given. File names are never seen by
    a shell, whatever they hold."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=source,
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, files):
        src = source / name
        if src.is_symlink() or src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name, follow_symlinks=False)
    if params is not None:
        shutil.copy(params, dest / "params.yaml")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    # dvc exp run commits too: the copy needs an identity even where the machine has none.
    subprocess.run(["git", "config", "user.name", "rehearsal"], cwd=dest, check=True)
    subprocess.run(["git", "config", "user.email", "rehearsal@localhost"], cwd=dest, check=True)
    commit(dest, "copy")
    return dest


def commit(repo: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", message, "--allow-empty"], cwd=repo, check=True)


if __name__ == "__main__":  # make smoke: python -m rehearsal.workspace DEST PARAMS
    import sys

    copy_repository(Path(sys.argv[1]), Path(sys.argv[2]))
