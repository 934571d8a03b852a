"""forgetting: what fine-tuning cost outside the task, as the loss on general text.

    python -m stages.forgetting --base models/base --model models/merged --out metrics/forgetting.json

Reads `forgetting:` of params.yaml. Both models score the same general-text documents (by
default data/general/, prose of Python's reference documentation shipped with the repository;
any dataset prepare can read, through `forgetting.dataset`): each document's mean per-token
cross-entropy over its first `max_length` tokens. Writes metrics/forgetting.json: the mean loss of
each model and fine-tuned minus base, paired by document, with a 95% bootstrap interval. Above
0, the fine-tuned model finds general text less likely than the base did: it forgot some.
"""

from __future__ import annotations

import argparse

from sft import stops
from sft.files import write_json
from sft.forgetting import ForgettingParams, difference, document_ids, documents, mean_losses
from sft.models import load_for_inference, load_tokenizer
from sft.params import load, run


def losses(model_dir: str, ids: list[list[int]], pad_id: int, p: ForgettingParams) -> list[float]:
    model, _ = load_for_inference(model_dir, dtype=p.dtype)
    print(f"[forgetting] {model_dir}: {len(ids)} documents, {sum(map(len, ids))} tokens", flush=True)
    return mean_losses(model, ids, p.batch_size, pad_id)


def main() -> None:
    ap = argparse.ArgumentParser(description="General-text loss of the base and the fine-tuned model, paired.")
    ap.add_argument("--base", default="models/base")
    ap.add_argument("--model", default="models/merged")
    ap.add_argument("--out", default="metrics/forgetting.json")
    args = ap.parse_args()
    p = load("forgetting", ForgettingParams)

    tokenizer = load_tokenizer(args.base)
    ids = document_ids(tokenizer, documents(p), p)
    pad = stops.pad_id(tokenizer)
    figures = difference(losses(args.base, ids, pad, p), losses(args.model, ids, pad, p))
    write_json(args.out, figures)
    print(f"[forgetting] general-text loss {figures['base_loss']} -> {figures['finetuned_loss']} nats a token: "
          f"{figures['difference']:+.4f} [{figures['difference_ci_low']:+.4f}, {figures['difference_ci_high']:+.4f}]",
          flush=True)


if __name__ == "__main__":
    run(main)
