"""Grouped-query attention on a CPU without copying keys and values.

A model with fewer key/value heads than query heads (SmolLM2: 9 and 3, Gemma 3, Llama 3) shares
each key/value head among a group of query heads. With a padding mask, transformers' sdpa
attention copies every key/value head once per query head before calling torch (`repeat_kv`),
because on a GPU torch's grouped kernel falls back to its slowest path when a mask is given. On a
CPU torch's own kernel takes the groups and the mask as they are, and returns the same bits
(tests/test_generation.py checks). In batched generation the copies were most of a decoding step:
profiled on SmolLM2-135M, batch 32, 600-token prompts, 63% of a step was that copy; a few-shot
batch generated in 44 s instead of 63 s without it, token for token the same.

A half-precision model (`evaluate.dtype: bfloat16` on a CPU with the instructions) attends in
float32 here. torch's CPU attention kernel ran 2.4x slower in bf16 than in float32 (profiled:
SmolLM2-135M, 32 three-shot prompts, AVX512-BF16: 7.4 s of attention against 3.1 s), while bf16
gains only in the matrix products; upcasting queries, keys and values costs less than that. Side
by side in one process, the 32 three-shot prompts took 12.5 and 10.5 s instead of 15.5 and 15.0,
zero-shot prompts 8.1 and 7.6 s instead of 9.0 and 8.0. Half-precision bytes follow the CPU
anyway (the whole graph with the bf16 opt-ins: fine-tuned accuracy 84.0%, as in float32, where
it was 83.0% with bf16 attention).

`grouped_query_attention(model)` switches a model on a CPU to this attention for a block and back;
everything but sdpa on a CPU keeps the model's own attention.
"""

from __future__ import annotations

from contextlib import contextmanager

NAME = "sdpa_grouped"


def grouped_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                 is_causal=None, **kwargs):
    """transformers' sdpa, with the key/value heads handed to torch ungrouped (`enable_gqa`)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.device.type != "cpu" or kwargs.get("position_bias") is not None or kwargs.get("cache") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    dtype = query.dtype
    if dtype in (torch.bfloat16, torch.float16):
        query, key, value = query.float(), key.float(), value.float()
        if attention_mask is not None and attention_mask.dtype != torch.bool:
            attention_mask = attention_mask.float()
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
        is_causal=query.shape[2] > 1 and attention_mask is None and causal,  # as transformers decides it
        enable_gqa=query.shape[1] != key.shape[1])
    return out.to(dtype).transpose(1, 2).contiguous(), None


def register() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(NAME, grouped_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the masks sdpa takes


@contextmanager
def grouped_query_attention(model):
    """`model` on the grouped attention inside the block where it runs sdpa on a CPU; as it was after."""
    before = getattr(model.config, "_attn_implementation", None)
    if before != "sdpa" or model.device.type != "cpu":
        yield model
        return
    register()
    model.set_attn_implementation(NAME)
    try:
        yield model
    finally:
        model.set_attn_implementation(before)
