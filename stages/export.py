"""export: the merged model as one GGUF for llama.cpp, Ollama and LM Studio, checked against the
merged model, with an Ollama Modelfile and the model card.

    python -m stages.export --model models/merged --data data/prepared --metrics-dir metrics \
        --out models/gguf --figures metrics/export.json

Reads `export:` of params.yaml, and `base`, `prepare` and `train` for the card. The GGUF is made
by llama.cpp's own converter (`export.outtype` f16 by default, q8_0; the k-quants by its quantizer,
sft/llamacpp.py); the chat template and the eos and end-of-turn tokens go in with it. The
Modelfile's TEMPLATE and stops are derived from the same chat template (sft/modelfile.py).

Before the folder replaces the old one, a parity check on the first validation prompts: the GGUF's
tokenizer must give the token ids training gave for each rendered prompt, greedy agreement with
the merged model along its own continuations (sft/parity.py) must reach
`export.min_greedy_agreement`, and the GGUF must stop at the end of turn. For quantized types the
test split is also answered by the GGUF and scored by the task metric, so the card says what the
quantization costs.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

from sft import handoff, llamacpp
from sft.card import RunFacts, model_card
from sft.exporting import ExportParams
from sft.files import atomic_dir, read_jsonl, write_json
from sft.generation import Settings, prompt_ids, render_prompts, replies
from sft.modelfile import modelfile, stop_strings, turn_parts
from sft.models import load_for_inference
from sft.others import OthersParams
from sft.pairing import paired_with_finetuned
from sft.params import UserError, load, read_section, run
from sft.parity import parity, reference
from sft.plots import loss_png
from sft.scoring import scores
from sft.stops import stop_tokens
from sft.task import read_task


def same_token_ids(llm, texts: list[str], ids: list[list[int]]) -> int:
    """Prompts the GGUF's own tokenizer encodes exactly as training did."""
    return sum(llm.tokenize(t.encode(), add_bos=False, special=True) == i for t, i in zip(texts, ids, strict=True))


def stops_at_end_of_turn(llm, ids: list[list[int]], expected, stops: set[int], max_new_tokens: int) -> dict:
    """Of the prompts where the merged model's reply ended at a stop token, how many the GGUF's ended
    at an end-of-generation token too (rather than running to the length limit)."""
    ended = [prompt for prompt, (cont, _) in zip(ids, expected, strict=True) if cont and cont[-1] in stops]
    stopped = sum(llamacpp.reply(llm, prompt, max_new_tokens * 2)[2] for prompt in ended)
    return {"replies_ending_at_end_of_turn": len(ended), "gguf_stopped": stopped}


def quantized_figures(llm, tokenizer, data: Path, max_new_tokens: int) -> dict:
    """The GGUF's own figures on the test split, scored as evaluate scores (its speed varies by
    machine and stays out of this hashed output)."""
    records = read_jsonl(data / "test.jsonl")
    answered, _ = replies((llm, tokenizer), [r["prompt"] for r in records], Settings(max_new_tokens), "llamacpp",
                          label="[export] the GGUF on the test split")
    return scores(read_task(data), answered, records).figures


def check(figures: dict, p: ExportParams) -> None:
    problems = []
    if figures["same_prompt_token_ids"] < figures["parity_prompts"]:
        problems.append(f"the GGUF's tokenizer encodes {figures['parity_prompts'] - figures['same_prompt_token_ids']}"
                        " rendered prompts differently from training")
    if figures["greedy_agreement"] is not None and not figures["greedy_agreement"] >= p.min_greedy_agreement:
        problems.append(f"greedy agreement {figures['greedy_agreement']:.3f} < export.min_greedy_agreement "
                        f"{p.min_greedy_agreement}")
    if figures["replies_ending_at_end_of_turn"] and not figures["gguf_stopped"]:
        problems.append("the GGUF never stops at the end of turn (its end-of-generation tokens lack it)")
    if problems:
        raise UserError(f"export parity check failed: {'; '.join(problems)}. The old models/gguf is kept; "
                        "a lower-bit export.outtype loses more, f16 or q8_0 keep close to the merged model")


def run_facts(args, p: ExportParams, others: OthersParams, tokenizer, prompt: str, stops: list[str], gguf: str, quantized) -> RunFacts:
    base, prepare, train = read_section("base"), read_section("prepare"), read_section("train")
    shots, forgetting = read_section("fewshot")["shots"], read_section("forgetting")["dataset"]
    sources = prepare.get("datasets") or [{k: prepare.get(k) for k in ("dataset", "subset", "revision")}]
    metrics = Path(args.metrics_dir)
    figures = {name: json.loads((metrics / f"{name}.json").read_text())
               for name in ("compare", "baseline", "finetuned", "fewshot", "forgetting", "train")}
    settings = {k: v for k, v in train.items() if not isinstance(v, dict) and v is not None}  # unset: not a setting
    settings["max_length"] = handoff.settings(args.data)["max_length"]  # SFTConfig's, as prepare applied it
    settings["global_batch"] = figures["train"].get("global_batch")
    return RunFacts(base_model=p.base_model or str(base.get("model_name_or_path")), license=p.license, datasets=sources,
                    method=str(train.get("method", "lora")), train_settings=settings, compare=figures["compare"],
                    finetuned=figures["finetuned"], baseline=figures["baseline"], fewshot=figures["fewshot"],
                    shots=shots, forgetting=figures["forgetting"], forgetting_dataset=forgetting,
                    others=other_models(others, Path(args.predictions), read_task(args.data).task_metric),
                    prompt_example=prompt, stops=stops, gguf=gguf, quantized=quantized)


def other_models(others: OthersParams, predictions: Path, metric) -> list[dict]:
    """The card's rows of other models (others: of params.yaml), from their predictions paired with
    the fine-tuned model's: the model, its revision, its figure and the fine-tuned model against it."""
    named = [(name, e["model_name_or_path"], e["revision"]) for name, e in others.hub.items()]
    named += [(name, path, None) for name, path in others.folders.items()]
    return [{"name": name, "model": model, "revision": revision,
             **paired_with_finetuned(predictions, name, metric)} for name, model, revision in named]


def main() -> None:
    ap = argparse.ArgumentParser(description="Export the merged model as GGUF, with a Modelfile and a model card.")
    ap.add_argument("--model", default="models/merged")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--metrics-dir", default="metrics", help="compare.json, baseline.json, finetuned.json, fewshot.json, forgetting.json, train.json")
    ap.add_argument("--predictions", default="metrics/predictions", help="per-item predictions; the card's "
                    "rows of other models pair theirs (others/<name>.jsonl) with finetuned.jsonl")
    ap.add_argument("--loss", default="metrics/train/plots/metrics", help="DVCLive's loss curves, drawn in the card")
    ap.add_argument("--out", default="models/gguf")
    ap.add_argument("--figures", default="metrics/export.json")
    args = ap.parse_args()
    p = load("export", ExportParams)
    others = load("others", OthersParams)  # the card's rows of other models
    if (why := llamacpp.missing()) is not None:
        raise UserError(why)

    model, tokenizer = load_for_inference(args.model, dtype="float32")
    prompts = [r["prompt"] for r in read_jsonl(Path(args.data) / "validation.jsonl")[:p.parity_prompts]]
    texts, ids = render_prompts(tokenizer, prompts), prompt_ids(tokenizer, prompts)
    expected = reference(model, tokenizer, ids, p.parity_max_new_tokens)
    stops = set(stop_tokens(model, tokenizer))
    stop_texts = stop_strings(model, tokenizer)
    del model
    name = llamacpp.gguf_name(p.outtype)
    with atomic_dir(args.out) as tmp:
        gguf = llamacpp.convert(Path(args.model), tmp / name, p.outtype, p.model_name)
        test_ids = prompt_ids(tokenizer, [r["prompt"] for r in read_jsonl(Path(args.data) / "test.jsonl")])
        n_ctx = max(map(len, ids + test_ids)) + 2 * max(p.parity_max_new_tokens, p.test_max_new_tokens)
        llm = llamacpp.load(gguf, n_ctx)
        figures = {"outtype": p.outtype, "gguf_bytes": gguf.stat().st_size,
                   "same_prompt_token_ids": same_token_ids(llm, texts, ids),
                   **parity(expected, partial(llamacpp.next_token_logprobs, llm), ids),
                   **stops_at_end_of_turn(llm, ids, expected, stops, p.parity_max_new_tokens)}
        quantized = quantized_figures(llm, tokenizer, Path(args.data), p.test_max_new_tokens) \
            if p.outtype not in ("f32", "f16", "bf16") else None
        if quantized:
            figures["test"] = quantized
        print(f"[export] {name}: {figures}", flush=True)
        check(figures, p)  # before the figures are written: metrics only for a GGUF that is kept
        write_json(args.figures, {**figures, "thresholds": {"min_greedy_agreement": p.min_greedy_agreement}})
        parts = turn_parts(tokenizer)
        if parts is None:
            print("[export] the chat template does not split into per-role wrappers: the Modelfile has no TEMPLATE, "
                  "so Ollama uses the chat template inside the GGUF", flush=True)
        (tmp / "Modelfile").write_text(modelfile(name, parts, stop_texts))
        has_plot = loss_png(Path(args.loss), tmp / "loss.png")
        card = model_card(run_facts(args, p, others, tokenizer, texts[0], stop_texts, name, quantized), p.model_name)
        text = str(card) if has_plot else str(card).replace("\n![training and validation loss](loss.png)\n", "\n")
        (tmp / "README.md").write_text(text, encoding="utf-8")
    print(f"[export] wrote {args.out} ({name}, Modelfile, README.md) and {args.figures}", flush=True)


if __name__ == "__main__":
    run(main)
