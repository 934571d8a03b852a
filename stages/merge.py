"""merge: fold the selected checkpoint's LoRA adapter into the base; one ready model folder.

    python -m stages.merge --base models/base --select metrics/select.json --data data/prepared \
        --out models/merged --metrics metrics/merge.json

Reads `merge:` and `train.method` of params.yaml. The base is loaded as training loaded it
(same model class) but at `merge.dtype`: an adapter trained on a 4-bit base (QLoRA) is merged
into full-precision weights, never into the quantized ones. A full fine-tune's checkpoint is
already a whole model and is saved through as it is.

Before the folder replaces the old one, a parity check compares the model as trained (adapter
on base) with the merged folder as a user will load it, on the first K validation prompts:
greedy agreement of the generated tokens and mean KL divergence of the next-token
distributions. Both go to metrics/merge.json; past the thresholds the stage fails and the old
folder stays. The generation config stops at the chat template's end-of-turn token.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from sft.checkpoints import merged, selected_checkpoint, stop_tokens, trained_model
from sft.files import atomic_dir, read_jsonl, write_json
from sft.generation import continuations, prompt_ids
from sft.models import DTYPES, PIN_FILE, load_for_inference, save_tokenizer
from sft.params import UserError, load, one_of, read_section, run


@dataclass
class MergeParams:
    dtype: str = "float32"  # weights of the merged model; merge at full precision, never into 4-bit
    parity_prompts: int = 8  # validation prompts of the parity check
    parity_max_new_tokens: int = 32
    max_mean_kl: float = 0.01  # nats; fp32 merges measure ~1e-9, bf16 ones ~1e-3
    min_greedy_agreement: float = 0.9  # share of generated tokens the two models agree on

    def __post_init__(self):
        one_of("merge", "dtype", self.dtype, DTYPES)


def reference(model, tokenizer, ids: list[list[int]], max_new_tokens: int) -> list[tuple[list[int], object]]:
    """Each prompt's greedy continuation and the next-token log-probabilities along it."""
    conts = continuations(model, tokenizer, ids, max_new_tokens, batch_size=len(ids))
    return [(cont, next_token_logprobs(model, prompt, cont)) for prompt, cont in zip(ids, conts, strict=True)]


def next_token_logprobs(model, prompt: list[int], cont: list[int]):
    import torch

    seq = torch.tensor([prompt + cont], device=model.device)
    with torch.inference_mode():
        logits = model(input_ids=seq).logits[0, len(prompt) - 1:len(prompt) + len(cont) - 1]
    return torch.log_softmax(logits.double(), dim=-1).cpu()  # float64: KL of near-equal models is ~1e-9


def parity(expected: list[tuple[list[int], object]], model, tokenizer, ids: list[list[int]],
           max_new_tokens: int) -> dict:
    """Greedy agreement and mean KL(trained || merged) over the reference continuations."""
    conts = continuations(model, tokenizer, ids, max_new_tokens, batch_size=len(ids))
    agree = total = 0
    kl_sum, positions = 0.0, 0
    for (ref_cont, ref_logp), prompt, cont in zip(expected, ids, conts, strict=True):
        agree += sum(a == b for a, b in zip(ref_cont, cont, strict=False))
        total += max(len(ref_cont), len(cont))
        logp = next_token_logprobs(model, prompt, ref_cont)
        kl_sum += float((ref_logp.exp() * (ref_logp - logp)).sum())
        positions += len(ref_cont)
    return {"parity_prompts": len(ids), "greedy_agreement": round(agree / max(total, 1), 6),
            "mean_kl": kl_sum / max(positions, 1)}


def check(figures: dict, p: MergeParams) -> None:
    problems = []
    if figures["mean_kl"] > p.max_mean_kl:
        problems.append(f"mean KL {figures['mean_kl']:.3g} > merge.max_mean_kl {p.max_mean_kl}")
    if figures["greedy_agreement"] < p.min_greedy_agreement:
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
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", default="models/merged")
    ap.add_argument("--metrics", default="metrics/merge.json")
    args = ap.parse_args()
    p = load("merge", MergeParams)
    method = read_section("train").get("method", "lora")
    if method == "qlora":
        print(f"[merge] trained with QLoRA on a 4-bit base: merging into the base loaded at {p.dtype}, not into "
              "4-bit weights (which would change the outputs)", flush=True)

    checkpoint = selected_checkpoint(args.select)
    model, tokenizer = trained_model(args.base, checkpoint, p.dtype)
    prompts = [r["prompt"] for r in read_jsonl(Path(args.data) / "validation.jsonl")[:p.parity_prompts]]
    ids = prompt_ids(tokenizer, prompts)
    expected = reference(model, tokenizer, ids, p.parity_max_new_tokens)
    model = merged(model)
    # Generation must stop at the chat template's end of turn, or the model talks on forever.
    stops = stop_tokens(model, tokenizer)
    model.generation_config.eos_token_id = stops[0] if len(stops) == 1 else stops
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    with atomic_dir(args.out) as tmp:
        model.save_pretrained(tmp)
        save_tokenizer(tokenizer, tmp)
        if (Path(args.base) / PIN_FILE).is_file():  # provenance, and the class to load it with
            shutil.copy(Path(args.base) / PIN_FILE, tmp / PIN_FILE)
        del model
        reloaded, _ = load_for_inference(tmp, dtype=p.dtype)
        figures = {**parity(expected, reloaded, tokenizer, ids, p.parity_max_new_tokens), "method": method,
                   "checkpoint": str(checkpoint), "dtype": p.dtype}
        print(f"[merge] parity on {len(ids)} validation prompts: greedy agreement {figures['greedy_agreement']:.4f}, "
              f"mean KL {figures['mean_kl']:.3g}", flush=True)
        write_json(args.metrics, {**figures, "thresholds": {k: v for k, v in asdict(p).items()
                                                              if k.startswith(("max_", "min_"))}})
        check(figures, p)
    print(f"[merge] wrote {args.out}", flush=True)


if __name__ == "__main__":
    run(main)
