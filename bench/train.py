"""Benchmark: our train stage against a plain trl script, side by side (target: >= 1.5x tokens/s,
no more memory).

    python bench/train.py [--steps 4] [--repeats 2]

Both sides train the embedded model (models/base) with the same LoRA (params.yaml's r, alpha,
targets), the same batch size and learning rate, on the same rendered records
(data/prepared/train.jsonl), for the same number of optimizer steps. "plain" is SFTTrainer the
way the workshop wrote it: defaults for everything else. "ours" is the stage's own trainer
(sft.training.make_trainer, as the train stage runs it: length-grouped batches, the model's own loss on a CPU, all cores).
Each run is a fresh process (its own peak memory); the sides alternate, and the ratio reported is
the median of the per-pair ratios. A collator wrapper counts real and padded tokens on both sides.
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
    args = SFTConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=sft["per_device_train_batch_size"],
                     learning_rate=sft["learning_rate"], max_length=sft["max_length"], report_to="none",
                     save_strategy="no", logging_steps=1, seed=sft.get("seed", 42),
                     bf16=has_cuda())  # the one change a CPU needs: trl defaults to bf16
    lora = LoraConfig(r=p.lora_r, lora_alpha=p.lora_alpha, target_modules=p.lora_target_modules, task_type="CAUSAL_LM")
    return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora)


def our_trainer(steps: int, out: str):
    from sft import device, training

    device.use_cpu_cores()
    p, sft = training.load_params(str(ROOT / "params.yaml"))
    sft = {**sft, "max_steps": steps, "save_strategy": "no", "eval_strategy": "no", "report_to": "none",
           "disable_tqdm": True}
    has_cuda = device.has_cuda()
    config = training.sft_config(p, sft, out, has_cuda)
    trainer, _ = training.make_trainer(p, config, str(ROOT / "models" / "base"), ROOT / "data" / "prepared", has_cuda)
    return trainer


def measure(side: str, steps: int) -> dict:
    """One run in this process: tokens per second of trainer.train() and peak memory."""
    from sft.device import peak_memory_bytes

    with tempfile.TemporaryDirectory() as out:
        trainer = (our_trainer if side == "ours" else plain_trainer)(steps, out)
        counter = Counting(trainer.data_collator)
        trainer.data_collator = counter
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    peak = peak_memory_bytes()
    return {"side": side, "steps": steps, "seconds": round(seconds, 2), "real_tokens": counter.real,
            "rows": counter.rows, "checkpointing": bool(trainer.args.gradient_checkpointing),
            "token_slots": counter.slots, "padding_share": round(1 - counter.real / counter.slots, 4),
            "tokens_per_second": round(counter.real / seconds, 1), "peak_memory_gb": round(peak / 2**30, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--side", choices=["ours", "plain"], help="(internal) measure one side in this process")
    args = ap.parse_args()
    if args.side:
        print(json.dumps(measure(args.side, args.steps)))
        return
    if not (ROOT / "data" / "prepared" / "train.jsonl").is_file():
        sys.exit("data/prepared is missing; run `dvc repro prepare` first")

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(ROOT / "models" / "base")
    runs = []
    for i in range(args.repeats):  # alternate, and swap who goes first, against drift on a shared machine
        for side in (("plain", "ours") if i % 2 == 0 else ("ours", "plain")):
            runs.append(run_side(__file__, side, args.steps))
            print(f"train: {side:5} {runs[-1]['tokens_per_second']:7.1f} tok/s, "
                  f"padding {runs[-1]['padding_share']:.1%}, peak {runs[-1]['peak_memory_gb']} GB", flush=True)
    # The machine's limit at the model's shapes, a batch's tokens a product, in this run.
    limit = matmul_gflops(config, round(statistics.mean(r["token_slots"] / r["steps"] for r in runs)))
    for r in runs:  # context: the positions a token attends to, half its row on average (causal)
        flops = training_flops(config, r["real_tokens"] / r["rows"] / 2, r["checkpointing"])
        r["share_of_limit"] = round(r["tokens_per_second"] * flops / (limit * 1e9), 4)
    ours = [r for r in runs if r["side"] == "ours"]
    plain = [r for r in runs if r["side"] == "plain"]
    speed = statistics.median(o["tokens_per_second"] / p["tokens_per_second"] for o, p in zip(ours, plain, strict=True))
    memory = statistics.median(o["peak_memory_gb"] / p["peak_memory_gb"] for o, p in zip(ours, plain, strict=True))
    shares = {side: round(statistics.median(r["share_of_limit"] for r in runs if r["side"] == side), 4)
              for side in ("ours", "plain")}
    result = {"benchmark": "train", "runs": runs, "speedup_median": round(speed, 2),
              "memory_ratio_median": round(memory, 2), "limit_gflops": round(limit, 1),
              "share_of_limit_median": shares, "target_speedup": 1.5}
    out = save("train", result)
    print(f"train: ours / plain tokens/s {speed:.2f}x (median of {args.repeats} pairs; target >= 1.5x), "
          f"peak memory {memory:.2f}x; of this machine's {limit:.0f} GFLOP/s at the model's shapes: ours "
          f"{shares['ours']:.0%}, plain {shares['plain']:.0%} -> {out}")


if __name__ == "__main__":
    main()
