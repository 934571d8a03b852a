"""What the Hugging Face hub says a revision is: the commit a branch or tag resolves to, recorded
beside the name so a run says exactly which files it read. Offline, or for a local path, nothing."""

from __future__ import annotations

from pathlib import Path


def resolved_revision(repo_id: str, revision: str | None, kind: str = "model") -> str | None:
    """The commit sha `revision` (a branch, tag or sha; None: the default branch) resolves to, or
    None where the hub does not answer (offline, a local folder, a private repository)."""
    if Path(repo_id).exists():
        return None
    from huggingface_hub import HfApi

    info = HfApi().model_info if kind == "model" else HfApi().dataset_info
    try:
        return info(repo_id, revision=revision).sha
    except Exception:  # noqa: BLE001 - offline mode, network and auth errors all mean "no answer"
        return None
