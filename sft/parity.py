"""Does a converted model (merged weights, a GGUF) still behave as the model it came from?

Measured along the reference model's own greedy continuations of validation prompts: how often
the other model picks the same next token where the reference's choice is decided, and the mean
KL divergence of the next-token distributions over every position.
"""

from __future__ import annotations

from collections.abc import Callable

from sft.generation import continuations

DECIDED = 0.1  # nats between the reference's first and second choice for a position to count
GPU_BATCH = 2  # parity prompts generated together on a GPU: each holds a KV cache up to its full length

Reference = list[tuple[list[int], object]]  # per prompt: greedy continuation, log-probabilities along it


def reference(model, tokenizer, ids: list[list[int]], max_new_tokens: int) -> Reference:
    """Each prompt's greedy continuation and the next-token log-probabilities along it."""
    conts = continuations(model, tokenizer, ids, max_new_tokens, batch_size=reference_batch(model, len(ids)))
    return [(cont, next_token_logprobs(model, prompt, cont)) for prompt, cont in zip(ids, conts, strict=True)]


def on_gpu(model) -> bool:
    return model.device.type == "cuda"


def reference_batch(model, prompts: int) -> int:
    """All prompts at once on a CPU (memory is plenty; the committed runs were made so); on a GPU
    a few at a time, whose KV caches (Gemma 3 4B: ~1 GB per 8k-token prompt in bf16) sit beside
    the weights."""
    return min(prompts, GPU_BATCH) if on_gpu(model) else prompts


def next_token_logprobs(model, prompt: list[int], cont: list[int], only_needed: bool | None = None):
    """A transformers model's log-probabilities of the next token at each position of `cont`.
    `only_needed` (default: on a GPU) projects only those positions onto the vocabulary
    (`logits_to_keep`): Gemma 3's 262,144-token vocabulary over an 8k-token prompt is ~4 GB of
    logits in bf16, of which the check reads the last few hundred rows. A CPU computes all rows,
    as the committed runs did, so their figures keep their bytes."""
    import torch

    only_needed = on_gpu(model) if only_needed is None else only_needed
    seq = torch.tensor([prompt + cont], device=model.device)
    with torch.inference_mode():
        if only_needed:  # the last len(cont) + 1 positions; the final one predicts past the continuation
            logits = model(input_ids=seq, logits_to_keep=len(cont) + 1).logits[0, :-1]
        else:
            logits = model(input_ids=seq).logits[0, len(prompt) - 1:len(prompt) + len(cont) - 1]
    return torch.log_softmax(logits.double(), dim=-1).cpu()  # float64: KL of near-equal models is ~1e-9


def parity(expected: Reference, logprobs_of: Callable[[list[int], list[int]], object], ids: list[list[int]]) -> dict:
    """`logprobs_of(prompt, continuation)` is the other model's next-token log-probabilities
    (float64, one row per continuation token). A near-tie flips under any change of number format,
    so it measures nothing: agreement counts decided positions only."""
    agree = decided = positions = 0
    kl_sum = 0.0
    for (ref_cont, ref_logp), prompt in zip(expected, ids, strict=True):
        logp = logprobs_of(prompt, ref_cont)
        top = ref_logp.topk(2, dim=-1).values
        clear = (top[:, 0] - top[:, 1]) >= DECIDED
        agree += int(((logp.argmax(-1) == ref_logp.argmax(-1)) & clear).sum())
        decided += int(clear.sum())
        kl_sum += float((ref_logp.exp() * (ref_logp - logp)).sum())
        positions += len(ref_cont)
    return {"parity_prompts": len(ids), "greedy_agreement": round(agree / decided, 6) if decided else None,
            "decided_positions": decided, "positions": positions, "mean_kl": kl_sum / max(positions, 1)}
