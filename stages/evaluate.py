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

from sft import checkpoints, device, generation, llamacpp, models, replies
from sft.files import read_jsonl, write_json, write_jsonl
from sft.generation import generate, generate_vllm, prompt_ids
from sft.metrics import TaskMetric
from sft.models import DTYPES, load_for_inference, load_tokenizer
from sft.params import UserError, load, one_of, ranged, run
from sft.stats import interval
from sft.task import Task, read_task

ROOT = Path(__file__).resolve().parents[1]


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
    elif backend == "transformers":
        model, tokenizer = load_for_inference(model_dir, dtype=p.dtype)
        answered, speed = generate(model, tokenizer, prompts, p.max_new_tokens, p.batch_size, known, kept.keep)
    else:
        new, speed = missing_replies(model_dir, prompts, p, backend, known)
        kept.keep(new)
        answered = [{**known, **new}[i] for i in range(len(prompts))]
    return [replies.as_text(r) for r in answered], {**speed, "kept_replies": len(known)}, backend


def kept_replies(model_dir: str, prompts: list, p: EvaluateParams, backend: str, kept_in: Path,
                 name: str) -> replies.Kept:
    """Where this model's replies to these prompts, with these settings and code, are kept."""
    code = [Path(m.__file__) for m in (generation, llamacpp, checkpoints, models)]
    key = replies.digest(model_dir, prompts, {**asdict(p), "backend": backend}, code)
    return replies.Kept(kept_in, name, key, len(prompts))


def missing_replies(model_dir: str, prompts: list, p: EvaluateParams, backend: str,
                    known: dict[int, str]) -> tuple[dict[int, str], dict]:
    """vLLM and llama.cpp answer each prompt on its own: only the prompts without a reply are asked."""
    missing = [i for i in range(len(prompts)) if i not in known]
    asked = [prompts[i] for i in missing]
    if backend == "vllm":
        new, speed = generate_vllm(model_dir, load_tokenizer(model_dir), asked, p.max_new_tokens, p.dtype)
    else:
        new, speed = llamacpp_replies(model_dir, asked, p)
    return dict(zip(missing, new, strict=True)), speed


def llamacpp_replies(model_dir: str, prompts: list, p: EvaluateParams) -> tuple[list[str], dict]:
    """The model converted to a GGUF at its own precision (evaluate.dtype), in a scratch folder,
    answering through llama.cpp: the same prompt token ids, greedy, one prompt at a time."""
    import tempfile

    if (why := llamacpp.missing()) is not None:
        raise UserError(why)
    tokenizer = load_tokenizer(model_dir)
    ids = prompt_ids(tokenizer, prompts)
    with tempfile.TemporaryDirectory() as tmp:
        outtype = llamacpp.OUTTYPE_OF_DTYPE[p.dtype]
        gguf = llamacpp.convert(Path(model_dir), Path(tmp) / llamacpp.gguf_name(outtype), outtype)
        llm = llamacpp.load(gguf, n_ctx=max(map(len, ids)) + p.max_new_tokens, all_logits=False)
        return llamacpp.generate(llm, ids, p.max_new_tokens)


def scored(task: Task, answered: list[str], records: list[dict]) -> dict:
    """The task metric through its local evaluate module (loaded by path: no hub needed)."""
    import evaluate

    module = evaluate.load(str(ROOT / "task_metrics" / task.metric))
    return module.compute(predictions=answered, references=[r["completion"][0]["content"] for r in records],
                          contexts=[r["references"] for r in records], settings=task.settings)


def headline_figures(result: dict, metric: TaskMetric) -> dict:
    """Headline figure with its 95% interval, the other figures, the unparseable share."""
    per_record = result["per_record"]
    low, high = interval([r[metric.primary] for r in per_record], metric.binary)
    figures = {k: v for k, v in result.items() if k != "per_record"}
    return {metric.primary: figures.pop(metric.primary), f"{metric.primary}_ci_low": round(low, 4),
            f"{metric.primary}_ci_high": round(high, 4), **figures, "samples": len(per_record)}


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
    metric = task.task_metric  # an unknown metric stops here, before minutes of generation
    answered, speed, backend = replies_of(args.model, [r["prompt"] for r in records], p,
                                          Path(args.kept or Path(args.out) / "replies.partial"), args.name)
    result = scored(task, answered, records)
    predictions = [{"id": r["id"], "prediction": reply, "gold": r["completion"][0]["content"], **s}
                   for r, reply, s in zip(records, answered, result["per_record"], strict=True)]
    metrics = headline_figures(result, metric)
    out = Path(args.out)
    write_jsonl(out / "predictions" / f"{args.name}.jsonl", predictions)
    write_json(out / "confusion" / f"{args.name}.json", confusion(result["per_record"]))
    write_json(out / f"{args.name}.json", metrics)
    write_json(out / "speed" / f"{args.name}.json", {**speed, "backend": backend})
    print(f"[evaluate] {args.name} ({backend} backend): {metrics}; {speed}", flush=True)


if __name__ == "__main__":
    run(main)
