"""Sharded FSDP checkpoints made whole, so select and merge read them with `from_pretrained`.

An accelerate config with `fsdp_state_dict_type: SHARDED_STATE_DICT` makes the trainer save each
checkpoint's weights as a torch distributed checkpoint (one file per process under
`pytorch_model_fsdp_0/`) and no `model.safetensors`, config or adapter file. The project's own
`configs/accelerate/fsdp.yaml` saves FULL_STATE_DICT and never needs this; a user's config may not.
"""

from __future__ import annotations

import shutil
from pathlib import Path

SHARDED = "pytorch_model_fsdp_0"  # accelerate's folder for a sharded save of the model
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


def sharded_checkpoints(train_dir: Path) -> list[Path]:
    """The checkpoints that hold only a sharded save of their weights."""
    return sorted(c for c in train_dir.glob("checkpoint-*")
                  if (c / SHARDED).is_dir() and not any((c / w).is_file() for w in WEIGHTS))


def merged_state_dict(sharded: Path) -> dict:
    """Every process's shards read back as one state dict of whole tensors, in this one process."""
    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    whole = sharded.parent / f".{sharded.name}.pt"
    dcp_to_torch_save(sharded, whole)
    state = torch.load(whole, weights_only=True)
    whole.unlink()
    # accelerate saves {"model": state_dict}
    return state["model"] if set(state) == {"model"} else state


def consolidate(checkpoint: Path, config, tokenizer, peft_config=None) -> Path:
    """Writes `checkpoint`'s sharded save as the files the trainer writes without FSDP and
    `from_pretrained` reads: `model.safetensors` and `config.json` for a full fine-tune,
    `adapter_model.safetensors` and `adapter_config.json` for an adapter (accelerate saves only the
    adapter's weights then), and the tokenizer."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in merged_state_dict(checkpoint / SHARDED).items()}
    staging = checkpoint / ".consolidating"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    if peft_config is not None:
        save_file(state, staging / "adapter_model.safetensors", metadata={"format": "pt"})
        peft_config.save_pretrained(staging)
    else:
        save_file(state, staging / "model.safetensors", metadata={"format": "pt"})
        config.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    for f in sorted(staging.iterdir()):  # weights last: a checkpoint with weights is whole
        if f.name not in WEIGHTS:
            f.replace(checkpoint / f.name)
    for f in sorted(staging.iterdir()):
        f.replace(checkpoint / f.name)
    staging.rmdir()
    print(f"[train] {checkpoint}: the sharded FSDP save consolidated into {len(state)} whole tensors", flush=True)
    return checkpoint


def consolidated_checkpoints(train_dir: Path, model, tokenizer) -> list[Path]:
    """Every sharded checkpoint of the run, consolidated; `model` is the trained model (its config,
    and its adapter's config when it is a PEFT model)."""
    peft_config = getattr(model, "peft_config", {}).get("default")
    return [consolidate(c, model.config, tokenizer, peft_config) for c in sharded_checkpoints(train_dir)]
