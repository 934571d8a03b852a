"""Benchmark: every assistant turn trained against the last one only, on a multi-turn set: label
share and training tokens/s, side by side.

    python bench/turns.py [--steps 6] [--repeats 2]

The set is the multi-turn example (data/raw/arithmetic-chat: 2-4 word problems a conversation).
Both sides train the embedded model (models/base) with params.yaml's train settings through the
stage's own trainer (sft.training.make_trainer), on the same records, tokens and batches, for the
same optimizer steps; only the loss mask differs (prepare.train_on: last | all_assistant). Each run
is a fresh process, the sides alternate, and the ratio is the median of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from record import run_side, save

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "data" / "raw" / "arithmetic-chat" / "train.jsonl"
SIDES = ("last", "all_assistant")


def chat_rows() -> list[dict]:
    from sft import shapes, sources

    return [{"id": r.where, **dict(zip(("prompt", "completion"), shapes.from_messages(r.fields, r.where, None),
                                       strict=True))} for r in sources.jsonl_records(DATA)]


def label_shares() -> dict:
    from sft import tokens

    tokenizer = tokens.fast_tokenizer(ROOT / "models" / "base")
    rows = chat_rows()
    return {side: tokens.label_share(tokens.token_counts(tokens.tokenized(tokenizer, rows, side))) for side in SIDES}


def measure(side: str, steps: int) -> dict:
    """One run in this process: non-padding tokens per second of trainer.train()."""
    from sft import device, handoff, tokens, training

    device.use_cpu_cores()
    p, sft = training.load_params(str(ROOT / "params.yaml"))
    sft = {**sft, "max_steps": steps, "save_strategy": "no", "eval_strategy": "no", "report_to": "none",
           "disable_tqdm": True, "include_num_input_tokens_seen": "non_padding"}
    with tempfile.TemporaryDirectory() as tmp:
        rows = chat_rows()
        # Tokenized as prepare tokenizes, with this side's loss masks, and handed over as prepare does.
        tokenized = tokens.tokenized(tokens.fast_tokenizer(ROOT / "models" / "base"), rows, side)
        handoff.write(tmp, {"train": tokenized, "validation": tokenized[:2]}, 1024, side)
        has_cuda = device.has_cuda()
        config = training.sft_config(p, sft, str(Path(tmp) / "out"), has_cuda)
        trainer, _ = training.make_trainer(p, config, str(ROOT / "models" / "base"), Path(tmp), has_cuda)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        seen = int(trainer.state.num_input_tokens_seen)
    return {"side": side, "steps": steps, "seconds": round(seconds, 2), "tokens": seen,
            "tokens_per_second": round(seen / seconds, 1), "final_loss": trainer.state.log_history[-1].get("train_loss")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--side", choices=SIDES, help="(internal) measure one side in this process")
    args = ap.parse_args()
    if args.side:
        print(json.dumps(measure(args.side, args.steps)))
        return
    if not (ROOT / "models" / "base").is_dir():
        sys.exit("models/base is missing; run `dvc repro base` first")
    shares = label_shares()
    print(f"turns: label share {shares['last']:.1%} (last) -> {shares['all_assistant']:.1%} (all_assistant)")
    runs = []
    for i in range(args.repeats):  # alternate, and swap who goes first, against drift on a shared machine
        for side in (SIDES if i % 2 == 0 else SIDES[::-1]):
            runs.append(run_side(__file__, side, args.steps))
            print(f"turns: {side:13} {runs[-1]['tokens_per_second']:7.1f} tok/s", flush=True)
    last = [r for r in runs if r["side"] == "last"]
    every = [r for r in runs if r["side"] == "all_assistant"]
    ratio = statistics.median(e["tokens_per_second"] / la["tokens_per_second"] for e, la in zip(every, last, strict=True))
    out = save("turns", {"benchmark": "turns", "label_share": shares, "runs": runs, "speed_ratio_median": round(ratio, 2)})
    print(f"turns: all_assistant / last tokens/s {ratio:.2f}x (median of {args.repeats} pairs), label share "
          f"{shares['last']:.1%} -> {shares['all_assistant']:.1%} -> {out}")


if __name__ == "__main__":
    main()
