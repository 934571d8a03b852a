"""The least time a finished run's model compute can take on this machine: each stage's model
FLOPs, counted from the run's own files, over this machine's matrix-product limit measured in the
same process (bench/limit.py) in the precision the stage ran in (float32, or bf16 where its params
chose it and the CPU has the instructions), beside the seconds the run recorded (metrics/speed/).

    python bench/floor.py [--seconds 658]     # after make repro; --seconds: its wall time

Counted, as the stages compute it: training's forward, its backward through the frozen weights
(LoRA; a full fine-tune's weight gradients as well) and the recompute under activation
checkpointing, the LM head at completion positions only (sft/training.py), and a validation pass
an epoch; each evaluation's prompts, the tokens every prompt shares read once and the LM head at
each prompt's last position (sft/generation.py), and its generated tokens; the general-text loss
of both models. Left out, so the floor stays a floor: the parity checks of merge and export,
select by a task figure, other models' baselines, loading, saving and starting processes.
Every matrix product is counted at the limit, decoding's too, which no batch of 32 rows reaches.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from limit import attention_flops, linear_flops, matmul_gflops  # before torch: pins numerics as stages do
from record import save

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EVALUATIONS = ("baseline", "finetuned", "fewshot")
TRAIN, FORGETTING = "train (with validation)", "forgetting (two models)"
NEEDED = ("params.yaml", "models/base/config.json", "metrics/train.json", "data/prepared/train.tokens.jsonl",
          "data/prepared/validation.tokens.jsonl", "data/prepared/test.jsonl")


def head_flops(config) -> float:
    """The LM head's forward FLOPs for one position."""
    return 2 * config.hidden_size * config.vocab_size


def body_flops(config, context: float) -> float:
    """A token's forward FLOPs through every layer but the LM head, attending to `context` positions."""
    return linear_flops(config) - head_flops(config) + attention_flops(config, context)


def forward_flops(config, lengths: list[int], heads: int) -> float:
    """One forward pass over sequences of `lengths` (each position attends to those before it, so
    to half its length on average), with the LM head at `heads` positions."""
    return sum(n * body_flops(config, n / 2) for n in lengths) + heads * head_flops(config)


def train_flops(config, train: list[dict], validation: list[dict], epochs: float, method: str,
                checkpointing: bool) -> dict:
    """Training and its validation passes, from prepare's token ids and loss masks."""
    def one_pass(rows):
        return forward_flops(config, [len(r["input_ids"]) for r in rows], sum(sum(r["assistant_masks"]) for r in rows))

    # Backward: the gradient of each layer's input costs what its forward did; a full fine-tune
    # also takes each weight's gradient, another forward's worth.
    backward = 2 if method == "full" else 1
    step = 1 + backward + (1 if checkpointing else 0)
    return {"train": one_pass(train) * epochs * step, "validation": one_pass(validation) * math.ceil(epochs - 1e-6)}


def evaluation_flops(config, prompts: list[list[int]], shared: int, generated: int) -> float:
    """One evaluation: its prompts, the `shared` first tokens once, each prompt's own tokens after
    them, the LM head at each prompt's last position; then `generated` tokens, each through the
    whole model, attending to the prompt and half a reply on average."""
    own = [len(p) - shared for p in prompts]
    reply = generated / max(len(prompts), 1)
    context = sum(map(len, prompts)) / max(len(prompts), 1) + reply / 2
    return (forward_flops(config, [shared], 0) + sum(n * body_flops(config, shared + n / 2) for n in own)
            + len(prompts) * head_flops(config) + generated * (body_flops(config, context) + head_flops(config)))


def figure(x: float) -> float:
    """Four significant digits: a tiny model's floor is milliseconds, the embedded default's minutes."""
    return float(f"{x:.4g}")


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def evaluation_prompts(name: str, tokenizer) -> list[list[int]]:
    """The token ids the evaluation `name` generated from, as its stage built them."""
    from sft import fewshot
    from sft.files import read_jsonl
    from sft.generation import prompt_ids

    data = Path("data/prepared")
    records = read_jsonl(data / "test.jsonl")
    if name != "fewshot":
        return prompt_ids(tokenizer, [r["prompt"] for r in records])
    p = quiet_params("fewshot", fewshot.FewShotParams)
    return prompt_ids(tokenizer, fewshot.prompts(records, fewshot.train_examples(data, p)))


def forgetting_lengths(tokenizer) -> list[int]:
    """The general-text documents' token counts, as the forgetting stage scores them."""
    from sft import forgetting

    p = quiet_params("forgetting", forgetting.ForgettingParams)
    return [len(ids) for ids in forgetting.document_ids(tokenizer, forgetting.documents(p), p)]


def checkpointing(train: dict) -> bool:
    """Whether training recomputed activations: train.gradient_checkpointing, or trl's default."""
    if "gradient_checkpointing" in train:
        return bool(train["gradient_checkpointing"])
    from trl import SFTConfig

    return SFTConfig.__dataclass_fields__["gradient_checkpointing"].default


def stage_dtypes(params: dict, native) -> dict:
    """The precision each counted stage's products ran in, as its params chose it: a half type
    only where the CPU has its instructions (`native`), as the stages fall back to float32."""
    from sft.evaluation import EvaluateParams
    from sft.forgetting import ForgettingParams

    chosen = {TRAIN: "bfloat16" if params["train"].get("cpu_bf16") else "float32",
              **dict.fromkeys(EVALUATIONS, quiet_params("evaluate", EvaluateParams).dtype),
              FORGETTING: quiet_params("forgetting", ForgettingParams).dtype}
    return {name: dtype if dtype == "float32" or native(dtype) else "float32" for name, dtype in chosen.items()}


def quiet_params(section: str, cls):
    """A stage's params as it reads them, defaults included, without the line it prints."""
    from sft.params import PARAMS_FILE, from_dict, read_section

    return from_dict(cls, read_section(section), f"{PARAMS_FILE}: {section}")



def stage_flops(config, tokenizer, params: dict) -> tuple[dict, dict]:
    """FLOPs of each counted stage of the run in the current folder, and the seconds it recorded."""
    from sft.files import read_jsonl
    from sft.generation import shared_prefix

    train = train_flops(config, read_jsonl(Path("data/prepared/train.tokens.jsonl")),
                        read_jsonl(Path("data/prepared/validation.tokens.jsonl")),
                        read_json(Path("metrics/train.json"))["epochs"], params["train"].get("method", "lora"),
                        checkpointing(params["train"]))
    flops = {TRAIN: train["train"] + train["validation"]}
    recorded = {TRAIN: (read_json(Path("metrics/speed/train.json")) or {}).get("train_seconds")}
    for name in EVALUATIONS:
        speed = read_json(Path(f"metrics/speed/{name}.json"))
        if speed is None or speed.get("backend", "transformers") != "transformers":
            continue  # not run, or run by vLLM or llama.cpp, whose own prompt reuse differs
        prompts = evaluation_prompts(name, tokenizer)
        flops[name] = evaluation_flops(config, prompts, len(shared_prefix(prompts)), speed["generated_tokens"])
        recorded[name] = speed["generation_seconds"]
    lengths = forgetting_lengths(tokenizer)
    flops[FORGETTING] = 2 * forward_flops(config, lengths, sum(lengths))  # logits at every position
    recorded[FORGETTING] = None  # the stage records no speed
    return flops, recorded


def report(flops: dict, recorded: dict, limits: dict, seconds: float | None, dtypes: dict) -> dict:
    """Each stage's FLOPs, its floor at the limit of the precision it ran in (`dtypes`) and its
    recorded seconds' share of it; the whole run's floor at each measured limit and as its stages
    ran (`as_run`), and the run's share of that when its seconds are given."""
    def at_limit(f: float, dtype: str) -> float:
        return f / (limits[dtype] * 1e9)

    def share(floor: float, taken: float | None) -> float | None:
        return figure(floor / taken) if taken else None

    floor = {name: at_limit(f, dtypes[name]) for name, f in flops.items()}
    stages = {name: {"tflop": figure(f / 1e12), "dtype": dtypes[name], "floor_seconds": figure(floor[name]),
                     "recorded_seconds": recorded[name], "share_of_limit": share(floor[name], recorded[name])}
              for name, f in flops.items()}
    total = sum(flops.values())
    floors = {**{dtype: figure(at_limit(total, dtype)) for dtype in limits}, "as_run": figure(sum(floor.values()))}
    return {"stages": stages, "total_tflop": figure(total / 1e12),
            "limit_gflops": {dtype: round(gflops, 1) for dtype, gflops in limits.items()}, "floor_seconds": floors,
            "run_seconds": seconds, "run_share_of_limit": share(sum(floor.values()), seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=ROOT, help="the finished run's folder (default: this repository)")
    ap.add_argument("--seconds", type=float, help="the run's wall time (e.g. `time make repro`), set-up excluded")
    ap.add_argument("--tokens", type=int, default=2048, help="rows of each product when measuring the limit")
    args = ap.parse_args()
    import yaml
    from transformers import AutoConfig, AutoTokenizer

    from sft.device import native_half_cpu
    from sft.numerics import native_half_kernels

    repo = args.repo.resolve()
    os.chdir(repo)  # the run's paths are relative, as the stages read them
    if missing := [f for f in NEEDED if not Path(f).exists()]:
        sys.exit(f"floor: {repo} has no finished run ({', '.join(missing)} missing): run `make repro` there first")
    params = yaml.safe_load(Path("params.yaml").read_text())
    config, tokenizer = AutoConfig.from_pretrained("models/base"), AutoTokenizer.from_pretrained("models/base")
    flops, recorded = stage_flops(config, tokenizer, params)
    dtypes = stage_dtypes(params, native_half_cpu)
    measured = ["float32"] + sorted({d for d in dtypes.values() if d != "float32"}
                                    | ({"bfloat16"} if native_half_cpu("bfloat16") else set()))
    if len(measured) > 1:
        # The CPU's own half-precision instructions, as train.cpu_bf16 and a half evaluate.dtype run
        # (emulated, ~100x slower): lifted before the first product of any kind; float32 stays on
        # pinned MKL.
        native_half_kernels()
    limits = {dtype: matmul_gflops(config, args.tokens, dtype, repeats=5) for dtype in measured}
    result = report(flops, recorded, limits, args.seconds, dtypes)
    for name, s in result["stages"].items():
        seen = s["recorded_seconds"]
        share = f", recorded {seen} s: {s['share_of_limit']:.0%} of the limit" if seen else ""
        precision = "" if s["dtype"] == "float32" else f" (its {s['dtype']} limit)"
        print(f"floor: {name}: {s['tflop']} TFLOP, {s['floor_seconds']} s at the limit{precision}{share}")
    floors = result["floor_seconds"]
    halves = "".join(f" ({floors[d]} s at its {d} limit, {limits[d]:.0f} GFLOP/s)" for d in measured[1:])
    as_run = f"; {floors['as_run']} s in the precisions this run chose" if floors["as_run"] != floors["float32"] \
        else ""
    run = f"; the run took {args.seconds:.0f} s: {result['run_share_of_limit']:.0%} of the limit" if args.seconds \
        else ""
    print(f"floor: {result['total_tflop']} TFLOP in all: {floors['float32']} s at this machine's float32 limit "
          f"({limits['float32']:.0f} GFLOP/s){halves}{as_run}{run}")
    print(f"floor: written to {save('floor', result, repo / 'bench' / 'results')}")


if __name__ == "__main__":
    main()
