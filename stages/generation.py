"""Greedy batched generation with the model's own chat template (left padding, longest first)."""

from __future__ import annotations

import time


def render_prompts(tokenizer, prompts: list[list[dict]]) -> list[str]:
    """The text the model sees: the same chat template as training, with the assistant header."""
    return [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]


def generate(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int, batch_size: int) -> tuple[list[str], dict]:
    """Replies in the order of `prompts`, and throughput figures."""
    import torch

    texts = render_prompts(tokenizer, prompts)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Similar lengths in one batch waste less compute on padding.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    replies, new_tokens, started = [""] * len(texts), 0, time.time()
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(model.device)
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        generated = out[:, batch["input_ids"].shape[1]:]
        for i, row in zip(idx, generated, strict=True):
            replies[i] = tokenizer.decode(row, skip_special_tokens=True)
            new_tokens += int((row != tokenizer.pad_token_id).sum())
    seconds = time.time() - started
    return replies, {"generated_tokens": new_tokens, "generation_seconds": round(seconds, 1),
                     "tokens_per_second": round(new_tokens / max(seconds, 1e-9), 1)}
