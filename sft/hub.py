"""What the Hugging Face hub says a revision is: the commit a branch or tag resolves to, recorded
beside the name so a run says exactly which files it read. Offline, or for a local path, nothing."""

from __future__ import annotations

from pathlib import Path

from sft.params import PARAMS_FILE, UserError

# What a snapshot of a model repository needs for transformers and vLLM to load it: no GGUF copies,
# no original/ checkpoints, no pickled .bin weights.
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt"]


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


def hub_folder(key: str, model: str, revision: str) -> str:
    """The local snapshot of a hub model at a commit: from the Hugging Face cache (all there is
    offline, or with HF_HUB_OFFLINE=1), else downloaded. `key` is where params.yaml names it
    (others.hub.<name>, judge.hub.<name>)."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(model, revision=revision, allow_patterns=MODEL_FILES)
    except Exception as e:  # noqa: BLE001 - offline and not cached, no such repository, gated: one line
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{PARAMS_FILE}: {key}: cannot load {model} at {revision} "
                        f"({type(e).__name__}: {reason}); download it once where the hub answers "
                        f"(hf download {model} --revision {revision}), set HF_TOKEN for a gated model, or delete "
                        f"{key}. The rest of the graph does not need it") from e
