"""Benchmark (GPU): how close training and generation come to the GPU's own limit, on the
text-to-sql preset's model (gemma-3-270m-it) built from its config with random weights (no
download: the architecture alone sets the cost). Target: 40% MFU for training.

    python bench/mfu.py      # on a CUDA machine, a few minutes; writes bench/results/gpu-<device>.json

Needs torch and transformers only; liger-kernel (`pip install --no-deps liger-kernel`, a 1 MB
wheel) adds the liger side. In one run, side by side:
- the limit: a bf16 8192^3 matrix product, timed on this GPU (the datasheet's dense bf16 peak is
  reported beside it);
- full fine-tuning in bf16 with fused AdamW, sdpa (flash-attention 2 when installed), each side
  in a fresh process (its own peak memory): plain transformers loss at batch 16, and liger-kernel's
  fused linear cross-entropy (the logits of a 262k vocabulary are never materialized) at batch 16
  and at batch 128, which fits in about the memory the plain loss needs for 16;
- generation as the evaluate stage's transformers backend runs it (a batch of prompts, greedy):
  prefill tokens/s and decode tokens/s. vLLM's side runs where vllm is installed.

Model FLOPs per trained token = 6 x parameters (the tied embedding counted once, as the LM head
it also is) + 12 x layers x heads x head_dim x the positions each token attends to (causal,
sliding-window layers capped at the window). MFU = tokens/s x FLOPs per token / peak. On a
machine without a CUDA GPU it says so and measures nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import time
from pathlib import Path

from record import run_side, save

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Peak dense bf16 tensor FLOP/s (no sparsity), from the vendors' data sheets.
PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100": 756.0,
               "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0, "RTX A5000": 111.0,
               "RTX 4090": 165.0}

# google/gemma-3-270m-it's text config (config.json on the hub), so no download is needed.
GEMMA3_270M = dict(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                   num_attention_heads=4, num_key_value_heads=1, head_dim=256, max_position_embeddings=32768,
                   sliding_window=512, rope_theta=1_000_000.0, query_pre_attn_scalar=256,
                   layer_types=["sliding_attention"] * 5 + ["full_attention"] + ["sliding_attention"] * 5
                   + ["full_attention"] + ["sliding_attention"] * 5 + ["full_attention"])
BATCH, LIGER_BATCH, SEQ, WARMUP = 16, 128, 1024, 5
GEN_BATCH, GEN_PROMPT, GEN_NEW = 32, 512, 128


def datasheet_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k.lower() in name.lower()), None)


def measured_tflops(n: int = 8192, repeats: int = 10) -> float:
    """This GPU's bf16 matrix-product rate: the limit every share below is taken against."""
    import torch

    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e12


def attended(seq: int, window: int | None) -> float:
    """Mean number of positions a token attends to under a causal mask (and a sliding window)."""
    return sum(min(i + 1, window or seq) for i in range(seq)) / seq


def flops_per_token(config, params: int, seq: int, training: bool = True) -> float:
    """Model FLOPs per token: 6N (2N forward only) plus attention scores and mixing."""
    width = config.num_attention_heads * config.head_dim
    attention = sum(4 * width * attended(seq, config.sliding_window if kind == "sliding_attention" else None)
                    for kind in config.layer_types)
    return (3 if training else 1) * (2 * params + attention)


def model(attn: str):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(**GEMMA3_270M, attn_implementation=attn)
    return Gemma3ForCausalLM(config).to("cuda", dtype=torch.bfloat16)


def attention_kernel() -> str:
    return "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"


def train_side(side: str, steps: int, batch: int = BATCH) -> dict:
    """One side's training steps in this process: tokens/s and peak memory."""
    import torch

    net = model(attention_kernel())
    if side == "liger":
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=net)
    params = sum(p.numel() for p in net.parameters())
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-5, fused=True)
    ids = torch.randint(0, net.config.vocab_size, (batch, SEQ), device="cuda")
    net.train()
    losses = []

    def step():
        loss = net(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())

    for _ in range(WARMUP):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"side": side, "batch": batch, "parameters": params, "tokens_per_second": batch * SEQ * steps / seconds,
            "flops_per_token": flops_per_token(net.config, params, SEQ), "last_loss": float(losses[-1]),
            "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def transformers_generation() -> dict:
    """The evaluate stage's transformers backend on this model: prefill (the prompts read once)
    and decode (every new token), greedy, all GEN_NEW tokens generated."""
    import torch

    net = model("sdpa").eval()
    params = sum(p.numel() for p in net.parameters())
    ids = torch.randint(0, net.config.vocab_size, (GEN_BATCH, GEN_PROMPT), device="cuda")

    def timed(new_tokens: int) -> float:
        torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.inference_mode():
            net.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        torch.cuda.synchronize()
        return time.perf_counter() - started

    timed(GEN_NEW)  # warm-up
    prefill = min(timed(1) for _ in range(3))
    whole = min(timed(GEN_NEW) for _ in range(2))
    decode = (whole - prefill) / (GEN_NEW - 1)
    prefill_flops = flops_per_token(net.config, params, GEN_PROMPT, training=False)
    decode_flops = flops_per_token(net.config, params, GEN_PROMPT + GEN_NEW, training=False)
    return {"batch": GEN_BATCH, "prompt_tokens": GEN_PROMPT, "new_tokens": GEN_NEW,
            "prefill_tokens_per_second": GEN_BATCH * GEN_PROMPT / prefill,
            "decode_tokens_per_second": GEN_BATCH / decode,
            "prefill_flops_per_token": prefill_flops, "decode_flops_per_token": decode_flops}


def vllm_generation() -> dict:
    if importlib.util.find_spec("vllm") is None:
        return {"skipped": "vllm is not installed here"}
    return {"skipped": "not measured by this script yet: run `dvc exp run -S evaluate.backend=vllm` and read "
                       "metrics/speed/*.json"}


def share(tokens_per_second: float, flops: float, tflops: float) -> float:
    return round(tokens_per_second * flops / (tflops * 1e12), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--side", choices=("plain", "liger"), help="one training side, in this process (internal)")
    ap.add_argument("--batch", type=int, default=BATCH, help="the side's batch (internal)")
    ap.add_argument("--peak-tflops", type=float, help="the GPU's datasheet dense bf16 TFLOP/s, if not in the table")
    args = ap.parse_args()
    import torch

    if args.side:
        print(json.dumps(train_side(args.side, args.steps, args.batch)))
        return
    if not torch.cuda.is_available():
        print("mfu: no CUDA GPU here; nothing measured (run `python bench/mfu.py` on a GPU machine)")
        return
    device = torch.cuda.get_device_name()
    datasheet = args.peak_tflops or datasheet_tflops(device)
    measured = measured_tflops()
    sides = [run_side(__file__, "plain", args.steps)]
    if importlib.util.find_spec("liger_kernel"):
        sides += [run_side(__file__, "liger", args.steps, "--batch", str(batch)) for batch in (BATCH, LIGER_BATCH)]
    else:
        print("mfu: liger-kernel is not installed: its side is skipped (pip install --no-deps liger-kernel)")
    for side in sides:
        side["share_of_measured"] = share(side["tokens_per_second"], side["flops_per_token"], measured)
        side["mfu"] = share(side["tokens_per_second"], side["flops_per_token"], datasheet) if datasheet else None
        side["tokens_per_second"] = round(side["tokens_per_second"])
    gen = transformers_generation()
    gen["prefill_share_of_measured"] = share(gen["prefill_tokens_per_second"], gen["prefill_flops_per_token"], measured)
    gen["decode_share_of_measured"] = share(gen["decode_tokens_per_second"], gen["decode_flops_per_token"], measured)
    result = {"benchmark": "gpu", "device": device, "torch": torch.__version__,
              "model": "gemma-3-270m (config, random weights)", "seq": SEQ, "steps": args.steps,
              "attn_implementation": attention_kernel(), "measured_bf16_tflops": round(measured, 1),
              "datasheet_bf16_tflops": datasheet, "train": sides,
              # liger against the plain loss: at the same batch, and at the batch it fits in the same memory
              "liger_speedup": [round(side["tokens_per_second"] / sides[0]["tokens_per_second"], 3) for side in sides[1:]],
              "liger_memory_ratio": [round(side["peak_memory_gb"] / sides[0]["peak_memory_gb"], 3) for side in sides[1:]],
              "generate_transformers": gen, "generate_vllm": vllm_generation(), "target_mfu": 0.40}
    out = save("gpu-" + re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-"), result)
    for side in sides:
        mfu = f"MFU {side['mfu']:.1%} of the datasheet's {datasheet} TFLOP/s, " if datasheet else ""
        print(f"mfu: train {side['side']} (batch {side['batch']}): {side['tokens_per_second']:,} tokens/s, {mfu}"
              f"{side['share_of_measured']:.1%} of the measured {measured:.0f}; peak memory {side['peak_memory_gb']} GB")
    print(f"mfu: generate (transformers): prefill {gen['prefill_tokens_per_second']:,.0f} tokens/s "
          f"({gen['prefill_share_of_measured']:.1%} of measured), decode {gen['decode_tokens_per_second']:,.0f} "
          f"tokens/s ({gen['decode_share_of_measured']:.2%}) -> {out}")


if __name__ == "__main__":
    main()
