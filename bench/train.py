"""Benchmark: our train stage against a plain trl script, side by side (target: >= 2.5x tokens/s
at an eval loss within 2% of plain trl's on the same steps).

    python bench/train.py [--steps 4] [--repeats 2]

Both sides train the embedded model (models/base) with the same LoRA (params.yaml's r, alpha,
targets), the same batch size and learning rate, on the same rendered records
(data/prepared/train.jsonl), for the same number of optimizer steps. "plain" is SFTTrainer the
way the workshop wrote it: defaults for everything else. "ours" is the stage's own trainer
(sft.training.make_trainer, as the train stage runs it: length-grouped batches, the model's own loss on a CPU, all cores).
Each run is a fresh process (its own peak memory); the sides alternate, and the ratio reported is
the median of the per-pair ratios. A collator wrapper counts real and padded tokens on both sides.
After its steps each side reports its loss on the validation records (eval_loss), so a faster side
is seen to train as well. On a CPU with bf16 instructions (AMX or AVX512-BF16) a third side,
"ours-bf16", is the stage with train.cpu_bf16 (bf16 autocast on the CPU's bf16 instructions), with
the bf16 products' own GFLOP/s beside it.
Each side's tokens/s is also given as a share of this machine's limit, measured in the same run
(bench/limit.py: the fp32 matrix products of the model's linear layers at its shapes, under the
stages' numerics pinning): model FLOPs a trained token costs (LoRA: forward, backward through the
frozen weights, the recompute of activation checkpointing) x tokens/s / the measured GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from limit import matmul_gflops, training_flops  # before torch: pins numerics as stages do
from record import run_side, save

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sft.device import native_half_cpu  # noqa: E402


class Counting:
    """Wraps a data collator: non-padding tokens (attention mask, or every token when padding-free)
    and token slots (the padded batch)."""

    def __init__(self, collate):
        self.collate, self.real, self.slots, self.rows = collate, 0, 0, 0

    def __call__(self, examples):
        self.rows += len(examples)
        batch = self.collate(examples)
        ids = batch["input_ids"]
        self.slots += ids.numel()
        self.real += int(batch["attention_mask"].sum()) if "attention_mask" in batch else ids.numel()
        return batch


def plain_trainer(steps: int, out: str):
    """SFTTrainer as the workshop wrote it: model, data, LoRA, a few arguments, defaults otherwise."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from sft import handoff
    from sft.device import has_cuda
    from sft.training import load_params

    p, sft = load_params(str(ROOT / "params.yaml"))
    sft["max_length"] = handoff.settings(ROOT / "data" / "prepared")["max_length"]
    model = AutoModelForCausalLM.from_pretrained(ROOT / "models" / "base")
    tokenizer = AutoTokenizer.from_pretrained(ROOT / "models" / "base")
    rows = [json.loads(line) for line in (ROOT / "data" / "prepared" / "train.jsonl").open()]
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    held = [json.loads(line) for line in (ROOT / "data" / "prepared" / "validation.jsonl").open()]
    validation = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in held])
    args = SFTConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=sft["per_device_train_batch_size"],
                     learning_rate=sft["learning_rate"], max_length=sft["max_length"], report_to="none",
                     save_strategy="no", logging_steps=1, seed=sft.get("seed", 42),
                     bf16=has_cuda())  # the one change a CPU needs: trl defaults to bf16
    lora = LoraConfig(r=p.lora_r, lora_alpha=p.lora_alpha, target_modules=p.lora_target_modules, task_type="CAUSAL_LM")
    return SFTTrainer(model=model, args=args, train_dataset=data, eval_dataset=validation, processing_class=tokenizer,
                      peft_config=lora)


def our_trainer(steps: int, out: str, cpu_bf16: bool = False):
    import dataclasses

    from sft import device, training

    device.use_cpu_cores()
    p, sft = training.load_params(str(ROOT / "params.yaml"))
    p = dataclasses.replace(p, cpu_bf16=cpu_bf16 or p.cpu_bf16)
    sft = {**sft, "max_steps": steps, "save_strategy": "no", "eval_strategy": "no", "report_to": "none",
           "disable_tqdm": True}
    has_cuda = device.has_cuda()
    config = training.sft_config(p, sft, out, has_cuda)
    trainer, _ = training.make_trainer(p, config, str(ROOT / "models" / "base"), ROOT / "data" / "prepared", has_cuda)
    return trainer


BF16_SIDE = "ours-bf16"  # train.cpu_bf16 on, where the CPU has bf16 instructions


def measure(side: str, steps: int) -> dict:
    """One run in this process: tokens per second of trainer.train() and peak memory."""
    from sft.device import peak_memory_bytes

    with tempfile.TemporaryDirectory() as out:
        if side == "plain":
            trainer = plain_trainer(steps, out)
        else:
            trainer = our_trainer(steps, out, cpu_bf16=side == BF16_SIDE)
        counter = Counting(trainer.data_collator)
        trainer.data_collator = counter
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        peak = peak_memory_bytes()
        trainer.data_collator = counter.collate  # validation tokens are not counted
        eval_loss = trainer.evaluate()["eval_loss"]  # the same validation records, each side's own loss
    figures = {"side": side, "steps": steps, "seconds": round(seconds, 2), "real_tokens": counter.real,
               "rows": counter.rows, "checkpointing": bool(trainer.args.gradient_checkpointing),
               "token_slots": counter.slots, "padding_share": round(1 - counter.real / counter.slots, 4),
               "tokens_per_second": round(counter.real / seconds, 1), "peak_memory_gb": round(peak / 2**30, 2),
               "eval_loss": round(eval_loss, 4)}
    if side == BF16_SIDE:  # this side's own limit: bf16 products on the CPU's bf16 instructions
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(ROOT / "models" / "base")
        figures["bf16_limit_gflops"] = round(matmul_gflops(config, counter.slots // steps, "bfloat16"), 1)
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--side", choices=["ours", "plain", BF16_SIDE], help="(internal) measure one side in this process")
    args = ap.parse_args()
    if args.side:
        print(json.dumps(measure(args.side, args.steps)))
        return
    if not (ROOT / "data" / "prepared" / "train.jsonl").is_file():
        sys.exit("data/prepared is missing; run `dvc repro prepare` first")

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(ROOT / "models" / "base")
    runs = []
    sides = ["plain", "ours"] + ([BF16_SIDE] if native_half_cpu("bfloat16") else [])
    for i in range(args.repeats):  # alternate, and swap who goes first, against drift on a shared machine
        for side in (sides if i % 2 == 0 else sides[::-1]):
            runs.append(run_side(__file__, side, args.steps))
            print(f"train: {side:9} {runs[-1]['tokens_per_second']:7.1f} tok/s, "
                  f"padding {runs[-1]['padding_share']:.1%}, peak {runs[-1]['peak_memory_gb']} GB, "
                  f"eval loss {runs[-1]['eval_loss']}", flush=True)
    # The machine's limit at the model's shapes, a batch's tokens a product, in this run.
    limit = matmul_gflops(config, round(statistics.mean(r["token_slots"] / r["steps"] for r in runs)))
    for r in runs:  # context: the positions a token attends to, half its row on average (causal)
        flops = training_flops(config, r["real_tokens"] / r["rows"] / 2, r["checkpointing"])
        r["share_of_limit"] = round(r["tokens_per_second"] * flops / (limit * 1e9), 4)
    def against_plain(side: str, key: str) -> float:
        mine = [r for r in runs if r["side"] == side]
        plain = [r for r in runs if r["side"] == "plain"]
        return round(statistics.median(o[key] / p[key] for o, p in zip(mine, plain, strict=True)), 3)

    measured = sorted({r["side"] for r in runs} - {"plain"})
    shares = {side: round(statistics.median(r["share_of_limit"] for r in runs if r["side"] == side), 4)
              for side in ["plain", *measured]}
    result = {"benchmark": "train", "runs": runs, "speedup_median": round(against_plain("ours", "tokens_per_second"), 2),
              "memory_ratio_median": round(against_plain("ours", "peak_memory_gb"), 2),
              "eval_loss_ratio_median": against_plain("ours", "eval_loss"), "limit_gflops": round(limit, 1),
              "share_of_limit_median": shares, "target_speedup": 2.5}
    if BF16_SIDE in measured:
        bf16 = [r for r in runs if r["side"] == BF16_SIDE]
        result[BF16_SIDE] = {"speedup_median": round(against_plain(BF16_SIDE, "tokens_per_second"), 2),
                             "memory_ratio_median": round(against_plain(BF16_SIDE, "peak_memory_gb"), 2),
                             "eval_loss_ratio_median": against_plain(BF16_SIDE, "eval_loss"),
                             "bf16_limit_gflops": statistics.median(r["bf16_limit_gflops"] for r in bf16)}
    out = save("train", result)
    print(f"train: ours / plain tokens/s {result['speedup_median']:.2f}x (median of {args.repeats} pairs; target >= "
          f"2.5x), peak memory {result['memory_ratio_median']:.2f}x, eval loss {result['eval_loss_ratio_median']:.3f}x; "
          f"of this machine's {limit:.0f} GFLOP/s (fp32) at the model's shapes: "
          + ", ".join(f"{side} {share:.0%}" for side, share in shares.items()) + f" -> {out}")
    if BF16_SIDE in result:
        b = result[BF16_SIDE]
        print(f"train: {BF16_SIDE} / plain tokens/s {b['speedup_median']:.2f}x, peak memory {b['memory_ratio_median']:.2f}x, "
              f"eval loss {b['eval_loss_ratio_median']:.3f}x (bf16 products: {b['bf16_limit_gflops']:.0f} GFLOP/s here)")

if __name__ == "__main__":
    main()
