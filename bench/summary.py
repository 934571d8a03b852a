"""Prints the benchmark figures in bench/results/ and, last, one line with every ratio and target."""

from __future__ import annotations

import json

from record import RESULTS


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> None:
    parts = []
    if train := load("train"):
        ours = [r for r in train["runs"] if r["side"] == "ours"]
        plain = [r for r in train["runs"] if r["side"] == "plain"]
        parts.append(f"train {train['speedup_median']}x tokens/s (target >= 2.5x), memory {train['memory_ratio_median']}x, "
                     f"padding {ours[-1]['padding_share']:.0%} vs {plain[-1]['padding_share']:.0%}")
    if turns := load("turns"):
        shares = turns["label_share"]
        parts.append(f"multi-turn label share {shares['last']:.1%} -> {shares['all_assistant']:.1%} at "
                     f"{turns['speed_ratio_median']}x tokens/s")
    if gen := load("generate"):
        bound = f", at most {gen['ceiling_median']}x with free decoding here" if "ceiling_median" in gen else ""
        parts.append(f"generate {gen['speedup_median']}x tokens/s (target >= 5x{bound})")
    if few := load("generate-3-shot"):
        parts.append(f"3-shot generate {few['speedup_median']}x tokens/s ({few['shared_prompt_tokens']} of "
                     f"{few['mean_prompt_tokens']:.0f} prompt tokens read once)")
    if prep := load("prepare"):
        parts.append(f"prepare {prep['records']:,} records {prep['median_seconds']} s (target < 30 s)")
    if over := load("overhead"):
        parts.append(f"no-op repro {over['median_seconds']['repro']} s, status {over['median_seconds']['status']} s "
                     "(target < 3 s)")
    if low := load("floor"):
        run = f"{low['run_seconds']:.0f} s, " if low.get("run_seconds") else ""
        parts.append(f"make repro {run}its floor {low['floor_seconds']['float32']} s at the float32 limit "
                     "(target <= 300 s)")
    if shared := load("shared_cpu"):
        parts.append(f"beside a busy process {shared['after_vs_before_each']}x with its share of the cores "
                     f"({shared['after_total_vs_alone']}x the limit together; no collapse)")
    gpus = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("gpu-*.json"))]
    for gpu in gpus:
        best = max(gpu["train"], key=lambda side: side["tokens_per_second"])
        parts.append(f"MFU {best['mfu']:.1%} on {gpu['device']} ({best['side']}; target 40%)")
    if not gpus:
        parts.append("MFU not measured (no GPU)")
    print("bench: " + "; ".join(parts))


if __name__ == "__main__":
    main()
