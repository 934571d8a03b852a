"""merge: fold the selected checkpoint's LoRA adapter into the base; one ready model folder.

    python -m stages.merge --base models/base --select metrics/select.json --data data/prepared \
        --out models/merged --metrics metrics/merge.json

Reads `merge:` of params.yaml and what train decided (models/trained.json: the method, the
adapter, the base's quantization). The base is loaded as training loaded it (same model class) at
`merge.dtype`. An adapter trained on a 4-bit base (QLoRA) learned against
the dequantized 4-bit weights, so it is merged into exactly those, dequantized to `merge.dtype`
(never requantized into 4-bit, and never into the original full-precision weights, whose
difference from the 4-bit ones the adapter never saw). A full fine-tune's checkpoint is already a
whole model and is saved through as it is.

Before the folder replaces the old one, a parity check compares the model as trained (the adapter
on the base; for QLoRA on the 4-bit base it was trained on) with the merged folder as a user will load it, on the first K validation prompts:
greedy agreement along the trained model's own continuations (where its choice is decided) and
mean KL divergence of the next-token distributions. Both go to metrics/merge.json; past the thresholds the stage fails and the old
folder stays. The generation config stops at the chat template's end-of-turn token.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import asdict
from pathlib import Path

from sft import trained
from sft.checkpoints import adapter_on_dequantized_base, base_as_trained, merged, selected_checkpoint, trained_model
from sft.files import atomic_dir, read_jsonl, write_json
from sft.generation import prompt_ids
from sft.merging import MergeParams
from sft.models import (
    PIN_FILE,
    keep_sentencepiece,
    load_for_inference,
    load_processor,
    model_class_of,
    save_tokenizer,
    sentencepiece_file,
)
from sft.params import UserError, load, run
from sft.parity import next_token_logprobs, parity, reference
from sft.stops import set_stops


def parity_reference(method: str, p: MergeParams) -> str:
    """What the merged folder was compared with: the model as trained."""
    if method == "qlora":
        return "the adapter on the 4-bit NF4 base (as trained)"
    if method == "lora":
        return f"the adapter on the base at {p.dtype}"
    return f"the checkpoint at {p.dtype}"


def check(figures: dict, p: MergeParams) -> None:
    problems = []
    if not figures["mean_kl"] <= p.max_mean_kl:  # NaN fails too
        problems.append(f"mean KL {figures['mean_kl']:.3g} > merge.max_mean_kl {p.max_mean_kl}")
    if figures["greedy_agreement"] is not None and not figures["greedy_agreement"] >= p.min_greedy_agreement:
        problems.append(f"greedy agreement {figures['greedy_agreement']:.3f} < merge.min_greedy_agreement "
                        f"{p.min_greedy_agreement}")
    if problems:
        raise UserError(f"merge parity check failed: {'; '.join(problems)}. The merged model differs from the "
                        "model as trained; the old models/merged is kept. Merge at float32 (merge.dtype) or "
                        "loosen the thresholds in params.yaml if the difference is expected")


def main() -> None:
    ap = argparse.ArgumentParser(description="Merge the selected checkpoint into the base model.")
    ap.add_argument("--base", default="models/base")
    ap.add_argument("--select", default="metrics/select.json")
    ap.add_argument("--trained", default="models/trained.json", help="what train decided: the method, the adapter, "
                    "the base's quantization")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="models/merged")
    ap.add_argument("--metrics", default="metrics/merge.json")
    args = ap.parse_args()
    p = load("merge", MergeParams)
    record = trained.read(args.trained)
    method = record["method"]
    if method == "qlora":
        print(f"[merge] trained with QLoRA on a 4-bit base: merging into those 4-bit weights dequantized to {p.dtype}"
              " (the weights the adapter was trained against)", flush=True)

    checkpoint = selected_checkpoint(args.select)
    # The reference is the model as trained: for QLoRA, the adapter on the 4-bit base.
    as_trained = base_as_trained(record)
    model, tokenizer = trained_model(args.base, checkpoint, p.dtype, record)
    prompts = [r["prompt"] for r in read_jsonl(Path(args.data) / "validation.jsonl")[:p.parity_prompts]]
    ids = prompt_ids(tokenizer, prompts)
    expected = reference(model, tokenizer, ids, p.parity_max_new_tokens)
    if as_trained:
        del model
        model, _ = adapter_on_dequantized_base(args.base, checkpoint, p.dtype, as_trained["quantization_config"])
    model = merged(model)
    # Generation must stop at the chat template's end of turn, or the model talks on forever.
    set_stops(model, tokenizer)
    processor = load_processor(args.base, model_class_of(args.base))
    with atomic_dir(args.out) as tmp:
        model.save_pretrained(tmp)
        if processor is not None:
            processor.save_pretrained(tmp)
        save_tokenizer(tokenizer, tmp)
        if (Path(args.base) / PIN_FILE).is_file():  # provenance, and the class to load it with
            shutil.copy(Path(args.base) / PIN_FILE, tmp / PIN_FILE)
        keep_sentencepiece(tmp, tokenizer, sentencepiece_file(args.base))  # Gemma's, for llama.cpp's converter (export)
        del model
        reloaded, _ = load_for_inference(tmp, dtype=p.dtype)
        figures = {**parity(expected, lambda prompt, cont: next_token_logprobs(reloaded, prompt, cont), ids), "method": method,
                   "checkpoint": str(checkpoint), "dtype": p.dtype, "parity_reference": parity_reference(method, p)}
        print(f"[merge] parity on {len(ids)} validation prompts against {figures['parity_reference']}: greedy "
              f"agreement {figures['greedy_agreement']} on {figures['decided_positions']} of {figures['positions']} "
              f"positions where its choice is decided, mean KL {figures['mean_kl']:.3g}", flush=True)
        check(figures, p)  # before the figures are written: metrics only for a model that is kept
        write_json(args.metrics, {**figures, "thresholds": {k: v for k, v in asdict(p).items()
                                                              if k.startswith(("max_", "min_"))}})
    print(f"[merge] wrote {args.out}", flush=True)


if __name__ == "__main__":
    run(main)
