"""Benchmark (GPU): model FLOPs utilization of full fine-tuning the text-to-sql preset's model
(gemma-3-270m-it) on random tokens. Target: 40% MFU (the workshop's 100-110 min an epoch on one
RTX A5000 is about 5-6%).

    python bench/mfu.py [--batch 16] [--seq 1024] [--steps 20] [--peak-tflops N]

MFU = tokens/s x 6 x parameters / the GPU's peak dense bf16 FLOP/s (parameters counted whole,
embeddings included, as the formula is usually quoted). The model is built from its config with
random weights (no download; the architecture alone sets the cost), trained in bf16 with AdamW
(fused), sdpa or flash-attention 2 when installed, liger-kernel's fused loss when installed.
On a machine without a CUDA GPU it says so and measures nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

from record import save

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


def peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k.lower() in name.lower()), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, help="the GPU's peak dense bf16 TFLOP/s, if not in the table")
    args = ap.parse_args()
    import torch

    from sft.device import has_cuda

    if not has_cuda():
        print("mfu: no CUDA GPU here; nothing measured (run `python bench/mfu.py` on a GPU machine)")
        return
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    device = torch.cuda.get_device_name()
    peak = args.peak_tflops or peak_tflops(device)
    if peak is None:
        sys.exit(f"mfu: '{device}' is not in the table; pass --peak-tflops (its dense bf16 TFLOP/s)")
    attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    torch.manual_seed(0)
    config = Gemma3TextConfig(**GEMMA3_270M, attn_implementation=attn)
    model = Gemma3ForCausalLM(config).to("cuda", dtype=torch.bfloat16)
    liger = importlib.util.find_spec("liger_kernel") is not None
    if liger:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=model)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), device="cuda")
    model.train()

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens_per_second = args.batch * args.seq * args.steps / seconds
    mfu = tokens_per_second * 6 * params / (peak * 1e12)
    result = {"benchmark": "mfu", "device": device, "model": "gemma-3-270m (config, random weights)",
              "parameters": params, "batch": args.batch, "seq": args.seq, "attn_implementation": attn,
              "liger_kernel": liger, "tokens_per_second": round(tokens_per_second), "peak_tflops": peak,
              "mfu": round(mfu, 4), "target_mfu": 0.40, "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1)}
    out = save("mfu", result)
    print(f"mfu: {mfu:.1%} on {device} ({tokens_per_second:,.0f} tokens/s, {params / 1e6:.0f}M parameters, "
          f"{attn}, liger {'on' if liger else 'off'}; target 40%) -> {out}")


if __name__ == "__main__":
    main()
