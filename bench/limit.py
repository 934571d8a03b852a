"""The machine's own limit for a model, measured where it runs: the matrix products of one pass
of the model's linear layers, at the model's shapes, timed in this process (so under the same
numerics pinning, sft/numerics.py, and thread count as the benchmark beside it); and the model
FLOPs a trained or generated token costs. bench/train.py and bench/generate.py report their
tokens/s as a share of it.

    python bench/limit.py [--tokens 2048]     # the limit alone, for models/base
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import sft  # noqa: E402,F401 - the stages' numerics pinning, before torch loads: the limit is measured under it


def linear_shapes(config) -> list[tuple[int, int, int]]:
    """(in, out, count) of every matrix product a token goes through: attention and MLP
    projections of each layer, and the LM head (the tied embedding is a product there)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    d, q, kv = config.hidden_size, config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    layers = config.num_hidden_layers
    return [(d, q, layers), (d, kv, 2 * layers), (q, d, layers), (d, config.intermediate_size, 2 * layers),
            (config.intermediate_size, d, layers), (d, config.vocab_size, 1)]


def linear_flops(config) -> float:
    """Forward FLOPs of the linear layers for one token: 2 x their weights."""
    return sum(2 * i * o * n for i, o, n in linear_shapes(config))


def attention_flops(config, context: float) -> float:
    """Forward FLOPs of attention scores and mixing for one token attending to `context` positions."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 4 * config.num_hidden_layers * config.num_attention_heads * head_dim * context


def training_flops(config, context: float, checkpointing: bool) -> float:
    """A trained token under LoRA: the forward, the backward through the frozen weights to reach
    the adapters of earlier layers (the adapters' own weight gradients are a rounding error at
    r = 16), and the forward again where activation checkpointing recomputes it."""
    forward = linear_flops(config) + attention_flops(config, context)
    return forward * (3 if checkpointing else 2)


def generation_flops(config, context: float) -> float:
    return linear_flops(config) + attention_flops(config, context)


def matmul_gflops(config, tokens: int, dtype: str = "float32", repeats: int = 3) -> float:
    """GFLOP/s of one pass of the model's matrix products over `tokens` rows: the best of `repeats`."""
    import torch

    kind = getattr(torch, dtype)
    pairs = [(torch.randn(tokens, i, dtype=kind), torch.randn(i, o, dtype=kind), n)
             for i, o, n in linear_shapes(config)]
    flops = sum(2 * tokens * a.shape[1] * b.shape[1] * n for a, b, n in pairs)
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass warms up
        started = time.perf_counter()
        for a, b, n in pairs:
            for _ in range(n):
                torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return flops / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "base"))
    ap.add_argument("--tokens", type=int, default=2048, help="rows of each product (a batch's tokens)")
    args = ap.parse_args()
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(args.model)
    print(f"limit: {matmul_gflops(config, args.tokens):.1f} GFLOP/s (fp32 matrix products of {args.model} over "
          f"{args.tokens} tokens); a trained token costs {training_flops(config, 128, True) / 1e9:.2f} GFLOP with "
          f"activation checkpointing, a generated one {generation_flops(config, 160) / 1e9:.2f}")


if __name__ == "__main__":
    main()
