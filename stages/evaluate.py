"""evaluate: generate on the test split with one model, greedy, and score with the task metric.

    python -m stages.evaluate --model models/merged --name finetuned --data data/prepared

Reads `evaluate:` of params.yaml. dvc.yaml runs it twice (foreach): `baseline` on models/base
and `finetuned` on models/merged, so a change to training never re-evaluates the baseline.
Writes metrics/<name>.json (every figure of the task metric, a 95% interval of the headline
figure, the share of unparseable replies, generation throughput), the per-sample predictions
metrics/predictions/<name>.jsonl and, for letter answers, metrics/confusion/<name>.json.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from stages.files import read_jsonl, write_json, write_jsonl
from stages.params import load, run
from stages.scoring import task_metric
from stages.stats import interval

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class EvaluateParams:
    max_new_tokens: int = 96  # a reply longer than this is cut (and most likely wrong)
    batch_size: int = 32  # prompts generated together (transformers backend)
    dtype: str = "float32"
    backend: str = "auto"  # auto: vLLM on a CUDA GPU with vllm installed, else transformers


def replies_of(model_dir: str, prompts: list, p: EvaluateParams) -> tuple[list[str], dict, str]:
    from stages.generation import generate, generate_vllm, pick_backend
    from stages.models import load_for_inference, load_tokenizer

    backend = pick_backend(p.backend)
    if backend == "vllm":
        replies, speed = generate_vllm(model_dir, load_tokenizer(model_dir), prompts, p.max_new_tokens, p.dtype)
    else:
        model, tokenizer = load_for_inference(model_dir, dtype=p.dtype)
        replies, speed = generate(model, tokenizer, prompts, p.max_new_tokens, p.batch_size)
    return replies, speed, backend


def scored(metric_name: str, replies: list[str], records: list[dict]) -> dict:
    """The task metric through its local evaluate module (loaded by path: no hub needed)."""
    import evaluate

    module = evaluate.load(str(ROOT / "task_metrics" / metric_name))
    return module.compute(predictions=replies, references=[r["completion"][0]["content"] for r in records],
                          contexts=[r["references"] for r in records])


def summary(result: dict, metric_name: str, speed: dict) -> dict:
    """Headline figure with its 95% interval, the other figures, unparseable share, throughput."""
    metric = task_metric(metric_name)
    per_record = result["per_record"]
    low, high = interval([r[metric.primary] for r in per_record], metric.binary)
    figures = {k: v for k, v in result.items() if k != "per_record"}
    return {metric.primary: figures.pop(metric.primary), f"{metric.primary}_ci_low": round(low, 4),
            f"{metric.primary}_ci_high": round(high, 4), **figures, "samples": len(per_record), **speed}


def confusion(per_record: list[dict]) -> list[dict]:
    """Rows for `dvc plots`' confusion template: gold letter against predicted letter."""
    return [{"actual": r["gold_answer"], "predicted": r["answer"]} for r in per_record if "gold_answer" in r]


def main() -> None:
    ap = argparse.ArgumentParser(description="Evaluate one model on the test split.")
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", required=True, help="baseline or finetuned: names the output files")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="metrics")
    args = ap.parse_args()
    p = load("evaluate", EvaluateParams)

    data = Path(args.data)
    records = read_jsonl(data / "test.jsonl")
    metric_name = json.loads((data / "task.json").read_text())["metric"]
    task_metric(metric_name)  # an unknown metric stops here, before minutes of generation
    replies, speed, backend = replies_of(args.model, [r["prompt"] for r in records], p)
    result = scored(metric_name, replies, records)
    predictions = [{"id": r["id"], "prediction": reply, "gold": r["completion"][0]["content"], **s}
                   for r, reply, s in zip(records, replies, result["per_record"], strict=True)]
    metrics = summary(result, metric_name, speed)
    out = Path(args.out)
    write_jsonl(out / "predictions" / f"{args.name}.jsonl", predictions)
    write_json(out / "confusion" / f"{args.name}.json", confusion(result["per_record"]))
    write_json(out / f"{args.name}.json", metrics)
    print(f"[evaluate] {args.name} ({backend} backend): {metrics}", flush=True)


if __name__ == "__main__":
    run(main)
