"""Greedy generation, one entry point (`replies`) for every stage, bench and test, three backends:
transformers (CPU or GPU; batched, left padding, longest first, the prompts' shared first tokens
read once, a row leaving its batch once its reply is over), vLLM (GPU) and llama.cpp (CPU, the
model as a GGUF at its own precision). All feed the model the same token ids: the prompt rendered
by the model's own chat template, exactly as training rendered it. Which backend runs where is
sft/device.py's choice.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Container
from dataclasses import dataclass
from pathlib import Path

from sft.params import UserError
from sft.progress import Progress, throughput
from sft.stops import pad_id, stop_tokens


@dataclass(frozen=True)
class Settings:
    max_new_tokens: int  # a reply longer than this is cut
    batch_size: int = 32  # prompts generated together (transformers)
    dtype: str = "float32"  # the weights while generating (a folder loaded here)


def replies(model, prompts: list[list[dict]], settings: Settings, backend: str = "transformers",
            known: dict[int, str] | None = None, keep: Callable[[dict[int, str]], None] | None = None,
            label: str = "generating") -> tuple[list[str], dict]:
    """Every prompt's greedy reply, in the order of `prompts`, and throughput figures. `model` is a
    model folder, or one already loaded: (model, tokenizer) for transformers, (Llama, tokenizer)
    for llama.cpp. Replies in `known` (by index) are not generated again; `keep` gets the new ones
    as they come, so an interrupted run loses at most one batch."""
    known = dict(known or {})
    if backend == "transformers":
        loaded, tokenizer = loaded_model(model, settings.dtype)
        return generate(loaded, tokenizer, prompts, settings.max_new_tokens, settings.batch_size, known, keep, label)
    missing = [i for i in range(len(prompts)) if i not in known]
    asked = [prompts[i] for i in missing]
    if backend == "vllm":
        from sft.models import load_tokenizer

        answered, speed = generate_vllm(str(model), load_tokenizer(model), asked, settings.max_new_tokens,
                                        settings.dtype)
    elif backend == "llamacpp":
        answered, speed = llamacpp_replies(model, asked, settings, label)
    else:
        raise ValueError(f"unknown generation backend {backend!r}")
    new = dict(zip(missing, answered, strict=True))
    if keep is not None:
        keep(new)
    return [{**known, **new}[i] for i in range(len(prompts))], speed


def loaded_model(model, dtype: str):
    if isinstance(model, tuple):
        return model
    from sft.models import load_for_inference

    return load_for_inference(str(model), dtype=dtype)


def llamacpp_replies(model, prompts: list[list[dict]], settings: Settings, label: str) -> tuple[list[str], dict]:
    """llama.cpp's replies: a loaded (Llama, tokenizer), or a folder converted to a GGUF at its own
    precision (settings.dtype) in a scratch folder; the same prompt token ids, one prompt at a time."""
    from sft import llamacpp

    if isinstance(model, tuple):
        llm, tokenizer = model
        return llamacpp.generate(llm, prompt_ids(tokenizer, prompts), settings.max_new_tokens, label)
    from sft.models import load_tokenizer

    if (why := llamacpp.missing()) is not None:
        raise UserError(why)
    ids = prompt_ids(load_tokenizer(str(model)), prompts)
    with tempfile.TemporaryDirectory() as tmp:
        gguf = llamacpp.own_precision(Path(model), Path(tmp), settings.dtype)
        llm = llamacpp.load(gguf, n_ctx=max(map(len, ids), default=1) + settings.max_new_tokens, all_logits=False)
        return llamacpp.generate(llm, ids, settings.max_new_tokens, label)


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
    generated batch as it ends. The batches are the same whatever is skipped, so are the replies.

    The tokens every prompt starts with (system message, few-shot examples) are run through the
    model once and their keys and values copied into each batch, not computed again per prompt."""
    import torch

    from sft.attention import grouped_query_attention

    pad = pad_id(tokenizer)
    stops = set(stop_tokens(model, tokenizer))
    # Similar lengths in one batch waste less compute on padding.
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    out: list[list[int]] = [[] for _ in ids]
    model.eval()
    with torch.inference_mode(), grouped_query_attention(model):
        cache = prefix_cache(model, shared := shared_prefix(ids))
        shared_tokens = len(shared) if cache is not None else 0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            if all(i in skip for i in idx):
                continue
            input_ids, mask = batch_inputs([ids[i] for i in idx], shared_tokens, pad)
            past = None if cache is None else repeated(cache, len(idx))
            rows = batch_continuations(model, input_ids.to(model.device), mask.to(model.device), past,
                                       max_new_tokens, pad, stops)
            for i, row in zip(idx, rows, strict=True):
                out[i] = row
            if done is not None:
                done({i: out[i] for i in idx})
    return out


# A generate call ends once this share of its rows has stopped, and those rows leave the batch.
# Measured on SmolLM2-135M, 2 CPU cores (docs/benchmarks.md): the base model's 96 zero-shot
# replies 1.2-1.4x faster at a quarter and at every stop alike, 1.1x at a half; each pruning
# copies the remaining rows' keys and values, so pruning more often gains nothing.
STOPPED_SHARE = 0.25


def batch_continuations(model, input_ids, mask, cache, max_new_tokens: int, pad: int, stops: set[int]
                        ) -> list[list[int]]:
    """Greedy continuation of each row of one batch, up to and including its stop token.

    Rows whose reply is over leave the batch: generate runs until a quarter of its rows have
    stopped, those rows are dropped from the inputs and the cache, and the others go on from the
    cache where they were. Each row is computed as in the full batch, so the tokens are the same
    (tests/test_generation.py checks); the steps saved are those finished rows spent on padding.
    A cache that cannot drop rows (a recurrent layer's) goes on with every row."""
    import torch
    from transformers import StoppingCriteriaList

    prompt = input_ids.shape[1]
    rows = list(range(input_ids.shape[0]))
    out: list[list[int]] = [[] for _ in rows]
    prune = cache is None or prunable(cache)
    while True:
        made = input_ids.shape[1] - prompt
        criteria = [StoppedShare(stops, len(rows))] if prune else []
        result = model.generate(input_ids=input_ids, attention_mask=mask, past_key_values=cache,
                                max_new_tokens=max_new_tokens - made, do_sample=False, pad_token_id=pad,
                                return_dict_in_generate=True, stopping_criteria=StoppingCriteriaList(criteria))
        going = []
        for k, (r, row) in enumerate(zip(rows, result.sequences[:, prompt:].tolist(), strict=True)):
            end = next((n + 1 for n, t in enumerate(row) if t in stops), None)
            out[r] = row[:end]
            if end is None:
                going.append(k)
        if not going or result.sequences.shape[1] - prompt >= max_new_tokens:
            return out
        cache, grown = result.past_key_values, torch.ones_like(result.sequences[:, mask.shape[1]:])
        input_ids, mask = result.sequences, torch.cat([mask, grown], dim=1)
        if prune := prunable(cache):
            keep = torch.tensor(going, device=input_ids.device)
            cache.batch_select_indices(keep)
            input_ids, mask, rows = input_ids[keep], mask[keep], [rows[k] for k in going]


def prunable(cache) -> bool:
    """Whether rows can be dropped from `cache`: plain key/value layers only (a recurrent or
    quantized layer keeps state that dropping keys and values would leave behind)."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in layers)


class StoppedShare:
    """A stopping criterion for generate: the whole call ends once STOPPED_SHARE of its rows (at
    least one) have reached a stop token, so those rows can leave the batch."""

    def __init__(self, stops: set[int], rows: int):
        import math

        self.stops, self.needed = sorted(stops), max(1, math.ceil(STOPPED_SHARE * rows))
        self.stopped = self.stop_ids = None

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if self.stop_ids is None:  # once a call, not once a decoding step
            self.stop_ids = torch.tensor(self.stops, device=input_ids.device)
        last = torch.isin(input_ids[:, -1], self.stop_ids)
        self.stopped = last if self.stopped is None else self.stopped | last
        return torch.full_like(last, int(self.stopped.sum()) >= self.needed)


def shared_prefix(ids: list[list[int]]) -> list[int]:
    """The tokens every prompt starts with, leaving each prompt at least one of its own."""
    if not ids:
        return []
    shortest = min(ids, key=len)
    n = 0
    while n < len(shortest) - 1 and all(row[n] == shortest[n] for row in ids):
        n += 1
    return shortest[:n]


def prefix_cache(model, shared: list[int]):
    """The model's keys and values for `shared`, a batch of one; None where there is nothing to
    share, or the model's cache is not plain full attention: a sliding window counts the padding
    between shared and own tokens as distance, and a recurrent layer would read the padding."""
    import torch

    if not shared:
        return None
    cache = getattr(model(input_ids=torch.tensor([shared], device=model.device), use_cache=True),
                    "past_key_values", None)
    if not hasattr(cache, "batch_repeat_interleave") or any(getattr(cache, "is_sliding", [True])) \
            or any(getattr(cache, "is_linear", [])):
        return None
    return cache


def repeated(cache, rows: int):
    """A fresh copy of the shared prefix's cache for a batch of `rows` (generate appends to it)."""
    batch = copy.deepcopy(cache)
    batch.batch_repeat_interleave(rows)
    return batch


def batch_inputs(rows: list[list[int]], shared: int, pad: int):
    """Token ids and attention mask of a batch: the `shared` first tokens (cached, the same in every
    row), then each row's own tokens, left-padded to the longest. The padding sits between the two
    and is masked; positions count unmasked tokens, so each row reads as its own prompt."""
    import torch

    width = max(len(r) for r in rows) - shared
    input_ids = torch.tensor([r[:shared] + [pad] * (width - len(r) + shared) + r[shared:] for r in rows])
    mask = torch.tensor([[1] * shared + [0] * (width - len(r) + shared) + [1] * (len(r) - shared) for r in rows])
    return input_ids, mask


def generate(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int, batch_size: int,
             known: dict[int, str] | None = None, keep: Callable[[dict[int, str]], None] | None = None,
             label: str = "generating") -> tuple[list[str], dict]:
    """transformers backend: replies in the order of `prompts`, and throughput figures. Replies in
    `known` (by index) are not generated again; `keep` gets each new batch's replies as it ends."""
    answered = dict(known or {})
    before = set(answered)
    progress = Progress(len(prompts) - len(before), label)

    def done(batch: dict[int, list[int]]) -> None:  # each reply decoded once, as its batch ends
        new = {i: tokenizer.decode(row, skip_special_tokens=True) for i, row in batch.items()}
        answered.update(new)
        progress.update(sum(i not in before for i in batch), sum(len(row) for row in batch.values()))
        if keep is not None:
            keep(new)

    started = time.time()
    with progress:
        rows = continuations(model, tokenizer, prompt_ids(tokenizer, prompts), max_new_tokens, batch_size,
                             before, done)
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
