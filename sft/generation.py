"""Greedy generation behind one interface, two backends: transformers (CPU or GPU; batched, left
padding, longest first) and vLLM (GPU). Both feed the model the same token ids: the prompt
rendered by the model's own chat template, exactly as training rendered it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container

from sft.checkpoints import stop_tokens


def render_prompts(tokenizer, prompts: list[list[dict]]) -> list[str]:
    """The text the model sees: the same chat template as training, with the assistant header."""
    return [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]


def prompt_ids(tokenizer, prompts: list[list[dict]]) -> list[list[int]]:
    # The template already writes any BOS; adding special tokens again would double it.
    return tokenizer(render_prompts(tokenizer, prompts), add_special_tokens=False)["input_ids"]


def continuations(model, tokenizer, ids: list[list[int]], max_new_tokens: int, batch_size: int,
                  skip: Container[int] = (), done: Callable[[dict[int, list[int]]], None] | None = None
                  ) -> list[list[int]]:
    """Greedy continuation of each prompt (token ids, up to and including the stop token). A batch
    whose prompts are all in `skip` is not generated (its rows stay empty); `done` gets each
    generated batch as it ends. The batches are the same whatever is skipped, so are the replies."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = set(stop_tokens(model, tokenizer))
    # Similar lengths in one batch waste less compute on padding.
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    out: list[list[int]] = [[] for _ in ids]
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        if all(i in skip for i in idx):
            continue
        width = max(len(ids[i]) for i in idx)
        input_ids = torch.tensor([[pad] * (width - len(ids[i])) + ids[i] for i in idx], device=model.device)
        mask = torch.tensor([[0] * (width - len(ids[i])) + [1] * len(ids[i]) for i in idx], device=model.device)
        with torch.inference_mode():
            generated = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                       do_sample=False, pad_token_id=pad)[:, width:]
        for i, row in zip(idx, generated.tolist(), strict=True):
            end = next((n + 1 for n, t in enumerate(row) if t in stops), len(row))
            out[i] = row[:end]
        if done is not None:
            done({i: out[i] for i in idx})
    return out


def generate(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int, batch_size: int,
             known: dict[int, str] | None = None,
             keep: Callable[[dict[int, str]], None] | None = None) -> tuple[list[str], dict]:
    """transformers backend: replies in the order of `prompts`, and throughput figures. Replies in
    `known` (by index) are not generated again; `keep` gets each new batch's replies as it ends."""
    answered = dict(known or {})

    def done(batch: dict[int, list[int]]) -> None:  # each reply decoded once, as its batch ends
        new = {i: tokenizer.decode(row, skip_special_tokens=True) for i, row in batch.items()}
        answered.update(new)
        if keep is not None:
            keep(new)

    started = time.time()
    rows = continuations(model, tokenizer, prompt_ids(tokenizer, prompts), max_new_tokens, batch_size,
                         set(answered), done)
    return [answered[i] for i in range(len(prompts))], throughput(sum(len(r) for r in rows), time.time() - started)


def generate_vllm(model_dir: str, tokenizer, prompts: list[list[dict]], max_new_tokens: int,
                  dtype: str) -> tuple[list[str], dict]:
    """vLLM backend: the same prompt token ids, greedy; stops where the model folder's generation
    config says (merge writes the chat template's end-of-turn token there)."""
    from vllm import LLM, SamplingParams

    ids = prompt_ids(tokenizer, prompts)
    llm = LLM(model=model_dir, dtype=dtype, seed=0, **vllm_engine_args(model_dir, max(map(len, ids)) + max_new_tokens))
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    started = time.time()
    outputs = llm.generate([{"prompt_token_ids": prompt} for prompt in ids], params)
    seconds = time.time() - started
    replies = [o.outputs[0].text for o in outputs]
    return replies, throughput(sum(len(o.outputs[0].token_ids) for o in outputs), seconds)


def vllm_engine_args(model_dir: str, max_model_len: int) -> dict:
    """What vLLM reserves memory for: a context as long as this work needs, not the model's own
    (Gemma 3: 128k), and no image inputs for an image-text model (this project feeds it text), so
    vLLM neither sizes the KV cache for 128k tokens nor profiles the vision tower."""
    from sft.models import model_class_of

    args: dict = {"max_model_len": max_model_len}
    if model_class_of(model_dir) == "AutoModelForImageTextToText":
        args["limit_mm_per_prompt"] = {"image": 0}
    return args


def throughput(new_tokens: int, seconds: float) -> dict:
    return {"generated_tokens": new_tokens, "generation_seconds": round(seconds, 1),
            "tokens_per_second": round(new_tokens / max(seconds, 1e-9), 1)}
