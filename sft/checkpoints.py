"""Trained checkpoints as models (the adapter on the base, or a full model), and the tokens that
end an assistant turn, which every generation and every saved model must stop at."""

from __future__ import annotations

import json
from pathlib import Path

from sft.device import has_cuda
from sft.models import load_for_inference, load_tokenizer, nf4_config
from sft.params import UserError, read_section

TURN_MARK = "\u2403end-of-turn\u2403"  # stands in for a reply, to find what the chat template writes after one


def selected_checkpoint(select_file: str | Path) -> Path:
    """The checkpoint the select stage chose (metrics/select.json)."""
    path = Path(select_file)
    if not path.is_file():
        raise UserError(f"{path} is missing; run the select stage first (dvc repro select)")
    checkpoint = Path(json.loads(path.read_text())["checkpoint"])
    if not checkpoint.is_dir():
        raise UserError(f"{path} names {checkpoint}, which does not exist; rerun train (dvc repro train)")
    return checkpoint


def training_method() -> str:
    """train.method: a stage that loads a checkpoint as it was trained declares it in dvc.yaml."""
    return read_section("train").get("method", "lora")


def base_as_trained(method: str) -> dict:
    """How training loaded the base: in 4-bit NF4 for QLoRA (the weights its adapter learned on)."""
    return {"quantization_config": nf4_config(has_cuda())} if method == "qlora" else {}


def trained_model(base: str | Path, checkpoint: Path, dtype: str, **load_kwargs):
    """The checkpoint as trained: the adapter on the base (unmerged; `load_kwargs` load the base as
    training did, e.g. in 4-bit), or the full model."""
    if (checkpoint / "adapter_config.json").is_file():
        from peft import PeftModel

        model, tokenizer = load_for_inference(base, dtype=dtype, **load_kwargs)
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


def end_of_turn_id(tokenizer) -> int | None:
    """The token the chat template closes an assistant turn with (<|im_end|>, <end_of_turn>, ...)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": TURN_MARK}], tokenize=False)
    after = text.split(TURN_MARK, 1)[1] if TURN_MARK in text else ""
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return next((i for i in tokenizer(after, add_special_tokens=False)["input_ids"] if i in special), None)


def stop_tokens(model, tokenizer) -> list[int]:
    """Where generation stops: the generation config's eos, the tokenizer's, and the end of turn."""
    eos = model.generation_config.eos_token_id
    ids = [*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id, end_of_turn_id(tokenizer)]
    return list(dict.fromkeys(i for i in ids if i is not None))


def set_stops(model, tokenizer) -> None:
    """The generation config every saved model carries: stop at eos or the end of turn, and pad
    with the model's own pad token (Gemma's is id 0, which must not become eos)."""
    stops = stop_tokens(model, tokenizer)
    model.generation_config.eos_token_id = stops[0] if len(stops) == 1 else stops
    pad = tokenizer.pad_token_id
    model.generation_config.pad_token_id = pad if pad is not None else stops[0]
