"""benchmarks: standard benchmarks of one model folder, by lm-evaluation-harness.

    python -m stages.benchmarks --model models/base --name baseline --suite data/benchmarks --out metrics/benchmarks

Reads `benchmarks:` of params.yaml: the harness's task names (by default the shipped suite of
data/benchmarks/, general knowledge and reading; any harness task with its dataset pinned by a
commit), shots, the chat template flag, items a task, dtype and backend. Writes
metrics/benchmarks/<name>.json, every task's figures with their standard errors and the settings
that make them comparable, and metrics/benchmarks/details/<name>.jsonl, each item's outcome, which
compare pairs between base and fine-tuned. Did fine-tuning cost general ability: compare.json's
`benchmarks`, the card's table, `dvc metrics diff`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sft.benchmarks import (
    BenchmarksParams,
    details,
    harness_model,
    loaded_tasks,
    run_harness,
    settings,
    task_figures,
)
from sft.device import generation_backend, inference_device
from sft.files import write_json, write_jsonl
from sft.models import inference_dtype
from sft.params import load, run


def main() -> None:
    ap = argparse.ArgumentParser(description="Standard benchmarks of a model folder (lm-evaluation-harness).")
    ap.add_argument("--model", required=True, help="model folder")
    ap.add_argument("--name", required=True, help="baseline | finetuned: names the output files")
    ap.add_argument("--suite", default="data/benchmarks", help="the shipped tasks: harness YAMLs and their data")
    ap.add_argument("--out", default="metrics/benchmarks")
    args = ap.parse_args()
    p = load("benchmarks", BenchmarksParams)

    backend = generation_backend(p.backend, stage="benchmarks")
    dtype = p.dtype if backend == "vllm" else inference_dtype(p.dtype, inference_device())
    if p.tasks:
        manager, tasks = loaded_tasks(p, args.suite)  # before the model: a task that cannot load fails at once
        print(f"[benchmarks] {args.model}: {', '.join(p.tasks)} ({backend}, {dtype}, {p.num_fewshot} shots, chat "
              f"template {'on' if p.apply_chat_template else 'off'})", flush=True)
        model, model_args = harness_model(args.model, dtype, p.batch_size, backend)
        results = run_harness(model, model_args, manager, tasks, p)
    else:  # none listed: no figures, and neither the harness nor the model is loaded
        print("[benchmarks] benchmarks.tasks is empty: no benchmark runs", flush=True)
        results = {"results": {}, "samples": {}}

    figures = {"tasks": task_figures(results), "settings": settings(p, backend, dtype)}
    out = Path(args.out)
    write_jsonl(out / "details" / f"{args.name}.jsonl", details(results))
    write_json(out / f"{args.name}.json", figures)
    for task, row in figures["tasks"].items():
        shown = ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("samples", "shots", "version"))
        print(f"[benchmarks] {args.name} {task}: {shown} ({row['samples']} items)", flush=True)


if __name__ == "__main__":
    run(main)
