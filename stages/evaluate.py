"""evaluate: generate on the test split with one model, greedy, and score with the task metric.

    python -m stages.evaluate --model models/merged --name finetuned --data data/prepared

Reads `evaluate:` of params.yaml. dvc.yaml runs it twice (foreach): `baseline` on models/base
and `finetuned` on models/merged, so a change to training never re-evaluates the baseline.
Writes metrics/<name>.json (every figure of the task metric, a 95% interval of the headline
figure, the share of unparseable replies), the per-sample predictions
metrics/predictions/<name>.jsonl, for letter answers metrics/confusion/<name>.json, and the
generation speed, which varies by machine, to metrics/speed/<name>.json.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

from sft import device, generation, llamacpp, models, replies, stops
from sft.files import read_jsonl, write_json, write_jsonl
from sft.models import DTYPES
from sft.params import load, one_of, ranged, run
from sft.scoring import gold, scores
from sft.task import read_task


@dataclass
class EvaluateParams:
    max_new_tokens: int = ranged(64, low=1)  # gold queries are under 60 tokens; a longer reply is cut
    batch_size: int = ranged(32, low=1)  # prompts generated together (greedy, left padding; transformers backend)
    dtype: str = "float32"
    backend: str = "auto"  # vLLM on a CUDA GPU with vllm installed, else transformers; or llamacpp (CPU, GGUF)

    def __post_init__(self):
        one_of("evaluate", "dtype", self.dtype, DTYPES)
        one_of("evaluate", "backend", self.backend, device.GENERATION_BACKENDS)


def replies_of(model_dir: str, prompts: list, p: EvaluateParams, kept_in: Path,
               name: str) -> tuple[list[str], dict, str]:
    """Every prompt's reply: those kept by an earlier run of the same model, prompts and settings
    (sft/replies.py) are read back, the rest generated and kept as they come, before any scoring."""
    backend = device.generation_backend(p.backend)
    kept = kept_replies(model_dir, prompts, p, backend, kept_in, name)
    known = kept.known()
    if known:
        print(f"[evaluate] {len(known)} of {len(prompts)} replies kept by an earlier run ({kept.path})", flush=True)
    if len(known) == len(prompts):
        answered, speed = [known[i] for i in range(len(prompts))], generation.throughput(0, 0)
    else:
        settings = generation.Settings(p.max_new_tokens, p.batch_size, p.dtype)
        answered, speed = generation.replies(model_dir, prompts, settings, backend, known, kept.keep,
                                             f"[evaluate] {name}: generating")
    return [replies.as_text(r) for r in answered], {**speed, "kept_replies": len(known)}, backend


def kept_replies(model_dir: str, prompts: list, p: EvaluateParams, backend: str, kept_in: Path,
                 name: str) -> replies.Kept:
    """Where this model's replies to these prompts, with these settings and code, are kept."""
    code = [Path(m.__file__) for m in (generation, llamacpp, stops, models)]
    key = replies.digest(model_dir, prompts, {**asdict(p), "backend": backend}, code)
    return replies.Kept(kept_in, name, key, len(prompts))


def confusion(per_record: list[dict]) -> list[dict]:
    """Rows for `dvc plots`' confusion template: gold letter against predicted letter."""
    return [{"actual": r["gold_answer"], "predicted": r["answer"]} for r in per_record if "gold_answer" in r]


def main() -> None:
    ap = argparse.ArgumentParser(description="Evaluate one model on the test split.")
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", required=True, help="baseline or finetuned: names the output files")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="metrics")
    ap.add_argument("--kept", default=None, help="where replies are kept before scoring (default: "
                    "<out>/replies.partial; not an output: a rerun reads them back instead of generating)")
    args = ap.parse_args()
    p = load("evaluate", EvaluateParams)

    data = Path(args.data)
    records = read_jsonl(data / "test.jsonl")
    task = read_task(data)
    answered, speed, backend = replies_of(args.model, [r["prompt"] for r in records], p,
                                          Path(args.kept or Path(args.out) / "replies.partial"), args.name)
    scored = scores(task, answered, records)
    predictions = [{"id": r["id"], "prediction": reply, "gold": gold(r), **s}
                   for r, reply, s in zip(records, answered, scored.per_record, strict=True)]
    metrics = scored.figures
    out = Path(args.out)
    write_jsonl(out / "predictions" / f"{args.name}.jsonl", predictions)
    write_json(out / "confusion" / f"{args.name}.json", confusion(scored.per_record))
    write_json(out / f"{args.name}.json", metrics)
    write_json(out / "speed" / f"{args.name}.json", {**speed, "backend": backend})
    print(f"[evaluate] {args.name} ({backend} backend): {metrics}; {speed}", flush=True)


if __name__ == "__main__":
    run(main)
