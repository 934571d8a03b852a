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
from dataclasses import dataclass

from sft import sources, stops
from sft.files import write_json
from sft.forgetting import difference, document_text, mean_losses, token_ids
from sft.models import DTYPES, load_for_inference, load_tokenizer
from sft.params import UserError, load, one_of, ranged, run


@dataclass
class ForgettingParams:
    dataset: str = "data/general/python-reference.jsonl"  # general text that is no task's data; or a hub id / local file
    subset: str | None = None
    revision: str | None = None  # for a hub id, pin a commit sha
    split: str = "train"
    text_field: str = "text"  # plain text, or a list of chat messages (rendered by the model's chat template)
    max_documents: int = ranged(200, low=1)  # the first ones, in the split's order
    max_length: int = ranged(64, low=2)  # tokens of each document scored (the rest is not read)
    batch_size: int = ranged(8, low=1)
    dtype: str = "float32"

    def __post_init__(self):
        one_of("forgetting", "dtype", self.dtype, DTYPES)


def documents(p: ForgettingParams) -> list[sources.Record]:
    splits = sources.load(p.dataset, p.subset, p.revision, param="forgetting.dataset")
    if p.split not in splits:
        raise UserError(f"{p.dataset}: no split '{p.split}' (it has {sorted(splits)}); set forgetting.split")
    return splits[p.split][: p.max_documents]


def document_ids(tokenizer, records: list[sources.Record], p: ForgettingParams) -> list[list[int]]:
    """Every document's tokens, by the base's tokenizer for both models: the same tokens are scored."""
    ids = token_ids(tokenizer, [document_text(r, p.text_field, tokenizer) for r in records], p.max_length)
    if len(ids) < len(records):
        raise UserError(f"{p.dataset}: {len(records) - len(ids)} documents have fewer than 2 tokens; drop them")
    return ids


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
