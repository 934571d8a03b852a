"""Trained checkpoints as models: the adapter on the base (as trained, or merged into it), or a
full model. Where generation stops is sft/stops.py."""

from __future__ import annotations

import json
from pathlib import Path

from sft.device import has_cuda
from sft.models import load_for_inference, load_tokenizer, nf4_config
from sft.params import UserError


def selected_checkpoint(select_file: str | Path) -> Path:
    """The checkpoint the select stage chose (metrics/select.json)."""
    path = Path(select_file)
    if not path.is_file():
        raise UserError(f"{path} is missing; run the select stage first (dvc repro select)")
    checkpoint = Path(json.loads(path.read_text())["checkpoint"])
    if not checkpoint.is_dir():
        raise UserError(f"{path} names {checkpoint}, which does not exist; rerun train (dvc repro train)")
    return checkpoint


def base_as_trained(trained: dict) -> dict:
    """How training loaded the base (models/trained.json): in 4-bit NF4 for QLoRA, the weights its
    adapter learned on, computed in this machine's precision."""
    if trained["quantization"] is None:
        return {}
    return {"quantization_config": nf4_config(has_cuda(), trained["quantization"])}


def trained_model(base: str | Path, checkpoint: Path, dtype: str, trained: dict):
    """The checkpoint as trained (models/trained.json says which): the adapter on the base, loaded as
    training loaded it (in 4-bit for QLoRA) and not merged; or, for a full fine-tune, the model."""
    if trained["adapter"] is not None:
        from peft import PeftModel

        model, tokenizer = load_for_inference(base, dtype=dtype, **base_as_trained(trained))
        return PeftModel.from_pretrained(model, checkpoint), tokenizer
    model, _ = load_for_inference(str(checkpoint), dtype=dtype)
    return model, load_tokenizer(base)


def adapter_on_dequantized_base(base: str | Path, checkpoint: Path, dtype: str, quantization_config):
    """QLoRA's adapter on the base's own 4-bit weights, dequantized to `dtype`: dequant(W4) + BA is
    the function training learned, so merging into it keeps that function. Merging into the
    full-precision W instead would add the quantization error W - dequant(W4) to every layer."""
    import torch
    from peft import PeftModel

    model, tokenizer = load_for_inference(base, dtype=dtype, quantization_config=quantization_config)
    model = model.dequantize(dtype=getattr(torch, dtype))
    return PeftModel.from_pretrained(model, checkpoint), tokenizer


def merged(model, stage: str = "merge"):
    """The adapter folded into the base weights; a full fine-tune is already whole. `stage` names
    the log lines."""
    if hasattr(model, "merge_and_unload"):
        print(f"[{stage}] merging the LoRA adapter into the base weights", flush=True)
        return model.merge_and_unload()
    print(f"[{stage}] full fine-tune: the checkpoint is the model as it is", flush=True)
    return model
