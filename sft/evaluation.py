"""One model's evaluation on the test split: replies generated (or read back where an earlier run
kept them), scored by the task metric, written as the evaluate and fewshot stages write them.

Both stages generate with `evaluate:`'s settings, so the baselines and the fine-tuned model differ
by the model and the prompt alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from sft import attention, device, generation, llamacpp, models, numerics, progress, replies, stops
from sft.files import write_json, write_jsonl
from sft.models import DTYPES
from sft.params import one_of, ranged
from sft.scoring import gold, scores


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
        answered, speed = [known[i] for i in range(len(prompts))], progress.throughput(0, 0)
    else:
        settings = generation.Settings(p.max_new_tokens, p.batch_size, p.dtype)
        answered, speed = generation.replies(model_dir, prompts, settings, backend, known, kept.keep,
                                             f"[evaluate] {name}: generating")
    return [replies.as_text(r) for r in answered], {**speed, "kept_replies": len(known)}, backend


# Every module that can change a reply: the generation code and what it imports (a test checks
# this against the imports), so replies kept by older code are never taken for the new code's.
GENERATION_CODE = (generation, attention, device, llamacpp, models, numerics, stops)


def kept_replies(model_dir: str, prompts: list, p: EvaluateParams, backend: str, kept_in: Path,
                 name: str) -> replies.Kept:
    """Where this model's replies to these prompts, with these settings and code, are kept."""
    code = [Path(m.__file__) for m in GENERATION_CODE]
    key = replies.digest(model_dir, prompts, {**asdict(p), "backend": backend}, code)
    return replies.Kept(kept_in, name, key, len(prompts))


def confusion(per_record: list[dict]) -> list[dict]:
    """Rows for `dvc plots`' confusion template: gold letter against predicted letter."""
    return [{"actual": r["gold_answer"], "predicted": r["answer"]} for r in per_record if "gold_answer" in r]


def evaluate(model_dir: str, name: str, records: list[dict], prompts: list[list[dict]], task, p: EvaluateParams,
             out: Path, kept_in: str | None = None) -> dict:
    """Generate, score and write out/<name>.json, out/predictions/<name>.jsonl,
    out/confusion/<name>.json and the speed, out/speed/<name>.json; returns the figures. Replies
    are kept as they come in `kept_in` (default out/replies.partial: not an output)."""
    answered, speed, backend = replies_of(model_dir, prompts, p, Path(kept_in or out / "replies.partial"), name)
    scored = scores(task, answered, records)
    predictions = [{"id": r["id"], "prediction": reply, "gold": gold(r), **s}
                   for r, reply, s in zip(records, answered, scored.per_record, strict=True)]
    write_jsonl(out / "predictions" / f"{name}.jsonl", predictions)
    write_json(out / "confusion" / f"{name}.json", confusion(scored.per_record))
    write_json(out / f"{name}.json", scored.figures)
    write_json(out / "speed" / f"{name}.json", {**speed, "backend": backend})
    print(f"[evaluate] {name} ({backend} backend): {scored.figures}; {speed}", flush=True)
    return scored.figures
