"""Benchmark: the evaluate stage's generation against one request at a time (target: >= 5x tokens/s),
and llama.cpp (evaluate.backend: llamacpp) against both.

    python bench/generate.py [--prompts 32] [--repeats 2] [--shots 0]

Both sides use the fine-tuned model (models/merged), greedy, the same test prompts rendered by
the same chat template and the same max_new_tokens (params.yaml). "ours" is
sft.generation.generate (batches of evaluate.batch_size, left padding, longest first, the
prompts' shared first tokens computed once, grouped-query attention without key/value copies);
"one at a time" is `model.generate` per prompt, as a first script would do it. The sides
alternate in one process; the ratio is the median of the per-pair ratios. Replies must agree.

Each pair also times our side with max_new_tokens=1 (reading the prompts only, "prefill"): the
single side's time over that is the most our batching of these prompts could reach on this
machine if decoding were free, since prefill is compute-bound and batching does not remove work.

--shots N puts N solved train examples before each prompt, as the fewshot stage does
(fewshot.seed from params.yaml): prompts ~4x longer that share most of their tokens. The share of
the machine's limit counts the FLOPs of the tokens each side reads: ours reads the shared ones once.

With llama-cpp-python installed (make llamacpp), a third side in each pair: the same model
converted once to a GGUF at the same precision (evaluate.dtype; the conversion is timed apart),
the same prompt token ids, greedy, one prompt at a time, as the llamacpp backend runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from limit import generation_flops, matmul_gflops  # before torch: pins numerics as stages do
from record import save

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one_at_a_time(model, tokenizer, prompts, max_new_tokens):
    import torch

    replies, tokens, started = [], 0, time.perf_counter()
    for prompt in prompts:
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        batch = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[0, batch["input_ids"].shape[1]:]
        tokens += len(new)
        replies.append(tokenizer.decode(new, skip_special_tokens=True))
    return replies, tokens, time.perf_counter() - started


def batched(model, tokenizer, prompts, max_new_tokens, batch_size):
    from sft.generation import Settings, replies

    started = time.perf_counter()
    answered, speed = replies((model, tokenizer), prompts, Settings(max_new_tokens, batch_size), label="generate: ours")
    return answered, speed["generated_tokens"], time.perf_counter() - started


def llamacpp_side(llm, tokenizer, prompts, max_new_tokens):
    from sft.generation import Settings, replies

    started = time.perf_counter()
    answered, speed = replies((llm, tokenizer), prompts, Settings(max_new_tokens), "llamacpp",
                              label="generate: llama.cpp")
    return answered, speed["generated_tokens"], time.perf_counter() - started


def gguf_of(model_dir: Path, dtype: str, workdir: Path, n_ctx: int):
    from sft import llamacpp

    started = time.perf_counter()
    gguf = llamacpp.own_precision(model_dir, workdir, dtype)
    print(f"generate: converted {model_dir} to {gguf.name} in {time.perf_counter() - started:.1f} s", flush=True)
    return llamacpp.load(gguf, n_ctx, all_logits=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--shots", type=int, default=0, help="solved train examples before each prompt (fewshot)")
    args = ap.parse_args()
    import torch
    import yaml

    from sft import fewshot, llamacpp
    from sft.device import use_cpu_cores
    from sft.generation import prompt_ids, shared_prefix
    from sft.models import load_for_inference

    use_cpu_cores()
    torch.manual_seed(0)
    all_params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = all_params["evaluate"]
    model, tokenizer = load_for_inference(ROOT / "models" / "merged", dtype=params["dtype"])
    data = ROOT / "data" / "prepared"
    records = [json.loads(line) for line in (data / "test.jsonl").open()][:args.prompts]
    prompts = [r["prompt"] for r in records]
    if args.shots:
        drawn = fewshot.FewShotParams(shots=args.shots, seed=all_params["fewshot"]["seed"])
        prompts = fewshot.prompts(records, fewshot.train_examples(data, drawn))
    workdir = tempfile.TemporaryDirectory()
    llm = None
    if llamacpp.missing() is None:
        n_ctx = max(len(i) for i in prompt_ids(tokenizer, prompts)) + params["max_new_tokens"]
        llm = gguf_of(ROOT / "models" / "merged", params["dtype"], Path(workdir.name), n_ctx)
    else:
        print(f"generate: no llama.cpp side ({llamacpp.missing()})", flush=True)
    # The machine's limit at the model's shapes (a batch of prompts' tokens a product), in this run,
    # and the model FLOPs of reading the prompts and of writing the replies.
    ids = prompt_ids(tokenizer, prompts)
    lengths = [len(i) for i in ids]
    shared = len(shared_prefix(ids))
    context = statistics.mean(lengths)
    limit = matmul_gflops(model.config, round(context * params["batch_size"]))
    our_prompt_flops = (sum(lengths) - (len(ids) - 1) * shared) * generation_flops(model.config, context / 2)
    print(f"generate: {len(ids)} prompts of {context:.0f} tokens on average, the first {shared} the same in all",
          flush=True)
    pairs = []
    for i in range(args.repeats):
        order = ("single", "ours") if i % 2 == 0 else ("ours", "single")
        order = (*order, "llamacpp") if llm is not None else order
        speeds, replies, seconds = {}, {}, {}
        for side in order:
            if side == "ours":
                replies[side], tokens, seconds[side] = batched(model, tokenizer, prompts, params["max_new_tokens"],
                                                               params["batch_size"])
                ours_flops = our_prompt_flops + tokens * generation_flops(model.config, context)
            elif side == "llamacpp":
                replies[side], tokens, seconds[side] = llamacpp_side(llm, tokenizer, prompts, params["max_new_tokens"])
            else:
                replies[side], tokens, seconds[side] = one_at_a_time(model, tokenizer, prompts,
                                                                     params["max_new_tokens"])
            speeds[side] = tokens / seconds[side]
            print(f"generate: {side:6} {speeds[side]:6.1f} tok/s ({tokens} tokens in {seconds[side]:.1f} s)", flush=True)
        prefill = batched(model, tokenizer, prompts, 1, params["batch_size"])[2]  # our side, prompts only
        print(f"generate: prefill only (ours) {prefill:.1f} s; one at a time {seconds['single']:.1f} s", flush=True)
        agree = sum(a.strip() == b.strip() for a, b in zip(replies["ours"], replies["single"], strict=True))
        pairs.append({**{f"{k}_tokens_per_second": round(v, 1) for k, v in speeds.items()},
                      "replies_equal": f"{agree}/{len(prompts)}", "prefill_seconds": round(prefill, 2),
                      "single_seconds": round(seconds["single"], 2), "ceiling": round(seconds["single"] / prefill, 2),
                      "ours_share_of_limit": round(ours_flops / seconds["ours"] / (limit * 1e9), 4),
                      "prefill_share_of_limit": round(our_prompt_flops / prefill / (limit * 1e9), 4)})
        if llm is not None:
            same = sum(a.strip() == b.strip() for a, b in zip(replies["ours"], replies["llamacpp"], strict=True))
            pairs[-1]["llamacpp_replies_equal_ours"] = f"{same}/{len(prompts)}"
    speedup = statistics.median(p["ours_tokens_per_second"] / p["single_tokens_per_second"] for p in pairs)
    ceiling = statistics.median(p["ceiling"] for p in pairs)
    result = {"benchmark": "generate", "prompts": len(prompts), "shots": args.shots, "mean_prompt_tokens": round(context, 1),
              "shared_prompt_tokens": shared, "max_new_tokens": params["max_new_tokens"],
              "batch_size": params["batch_size"], "pairs": pairs, "speedup_median": round(speedup, 2),
              "ceiling_median": round(ceiling, 2), "limit_gflops": round(limit, 1),
              "ours_share_of_limit_median": round(statistics.median(p["ours_share_of_limit"] for p in pairs), 4),
              "prefill_share_of_limit_median": round(statistics.median(p["prefill_share_of_limit"] for p in pairs), 4),
              "target_speedup": 5}
    if llm is not None:
        result["llamacpp_over_ours_median"] = round(statistics.median(
            p["llamacpp_tokens_per_second"] / p["ours_tokens_per_second"] for p in pairs), 2)
        result["llamacpp_over_single_median"] = round(statistics.median(
            p["llamacpp_tokens_per_second"] / p["single_tokens_per_second"] for p in pairs), 2)
        print(f"generate: llama.cpp / ours {result['llamacpp_over_ours_median']:.2f}x, llama.cpp / one at a time "
              f"{result['llamacpp_over_single_median']:.2f}x (median of {args.repeats} pairs)", flush=True)
    out = save("generate" if not args.shots else f"generate-{args.shots}-shot", result)
    print(f"generate: batched / one at a time {speedup:.2f}x (median of {args.repeats} pairs; target >= 5x; "
          f"at most {ceiling:.2f}x here even with free decoding); of this machine's {limit:.0f} GFLOP/s at the "
          f"model's shapes: ours {result['ours_share_of_limit_median']:.0%}, prefill alone "
          f"{result['prefill_share_of_limit_median']:.0%}; replies equal {pairs[-1]['replies_equal']} -> {out}")


if __name__ == "__main__":
    main()
