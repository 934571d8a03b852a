"""export: the merged model as one GGUF for llama.cpp, Ollama and LM Studio, checked against the
merged model, with an Ollama Modelfile.

    python -m stages.export --model models/merged --data data/prepared --out models/gguf \
        --figures metrics/export.json

Reads `export:` of params.yaml and nothing else: the GGUF's card is the card stage's
(models/card/gguf), so an edit to the card reconverts nothing. The GGUF is made
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
from functools import partial
from pathlib import Path

from sft import llamacpp
from sft.exporting import ExportParams, quantized_figures
from sft.files import atomic_dir, read_jsonl, write_json
from sft.generation import prompt_ids, render_prompts
from sft.modelfile import modelfile, stop_strings, turn_parts
from sft.models import load_for_inference
from sft.params import UserError, load, run
from sft.parity import parity, reference
from sft.stops import stop_tokens


def same_token_ids(llm, texts: list[str], ids: list[list[int]]) -> int:
    """Prompts the GGUF's own tokenizer encodes exactly as training did."""
    return sum(llm.tokenize(t.encode(), add_bos=False, special=True) == i for t, i in zip(texts, ids, strict=True))


def stops_at_end_of_turn(llm, ids: list[list[int]], expected, stops: set[int], max_new_tokens: int) -> dict:
    """Of the prompts where the merged model's reply ended at a stop token, how many the GGUF's ended
    at an end-of-generation token too (rather than running to the length limit)."""
    ended = [prompt for prompt, (cont, _) in zip(ids, expected, strict=True) if cont and cont[-1] in stops]
    stopped = sum(llamacpp.reply(llm, prompt, max_new_tokens * 2)[2] for prompt in ended)
    return {"replies_ending_at_end_of_turn": len(ended), "gguf_stopped": stopped}


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


def main() -> None:
    ap = argparse.ArgumentParser(description="Export the merged model as GGUF, with an Ollama Modelfile.")
    ap.add_argument("--model", default="models/merged")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="models/gguf")
    ap.add_argument("--figures", default="metrics/export.json")
    args = ap.parse_args()
    p = load("export", ExportParams)
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
        figures = {"gguf": name, "outtype": p.outtype, "gguf_bytes": gguf.stat().st_size,
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
    print(f"[export] wrote {args.out} ({name}, Modelfile) and {args.figures}", flush=True)


if __name__ == "__main__":
    run(main)
