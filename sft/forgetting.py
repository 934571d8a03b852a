"""What fine-tuning cost outside the task: each general-text document's mean per-token
cross-entropy under a model, and base against fine-tuned, paired by document.

Generation-based checks of general ability are slow and noisy on small models; the loss on text
that is no task's data is neither (peft measures forgetting the same way in its benchmark). A
document is plain text, or a list of chat messages rendered through the model's chat template.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sft import sources
from sft.models import DTYPES
from sft.params import UserError, one_of, ranged
from sft.sources import Record
from sft.stats import paired_difference


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


def documents(p: ForgettingParams) -> list[Record]:
    """The documents scored: the first `max_documents` of the split, in its order."""
    splits = sources.load(p.dataset, p.subset, p.revision, param="forgetting.dataset")
    if p.split not in splits:
        raise UserError(f"{p.dataset}: no split '{p.split}' (it has {sorted(splits)}); set forgetting.split")
    return splits[p.split][: p.max_documents]


def document_ids(tokenizer, records: list[Record], p: ForgettingParams) -> list[list[int]]:
    """Every document's tokens, by the base's tokenizer for both models: the same tokens are scored."""
    ids = token_ids(tokenizer, [document_text(r, p.text_field, tokenizer) for r in records], p.max_length)
    if len(ids) < len(records):
        raise UserError(f"{p.dataset}: {len(records) - len(ids)} documents have fewer than 2 tokens; drop them")
    return ids


def document_text(record: Record, field: str, tokenizer) -> str:
    """The text a record contributes: its `field`, as it is or, for messages, as the chat template renders them."""
    if field not in record.fields:
        raise UserError(f"{record.where}: no field '{field}' (it has {sorted(record.fields)}); set "
                        "forgetting.text_field to the field holding the text, or a list of chat messages")
    value = record.fields[field]
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in value):
        return tokenizer.apply_chat_template(value, tokenize=False)
    raise UserError(f"{record.where}: '{field}' is neither non-empty text nor a list of {{role, content}} "
                    "messages; fix the record or choose another forgetting.text_field")


def token_ids(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Each text's first `max_length` tokens (at least two: one to predict from, one to predict)."""
    ids = [tokenizer(t, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    return [x for x in ids if len(x) >= 2]


@torch.no_grad()
def mean_losses(model, ids: list[list[int]], batch_size: int, pad_id: int) -> list[float]:
    """Each sequence's mean next-token cross-entropy in nats, in the order given. Batches hold
    `batch_size` sequences, right-padded; padding is masked from attention and from the loss."""
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # batches of like lengths: little padding
    losses = [0.0] * len(ids)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(ids[i]) for i in rows)
        input_ids = torch.tensor([ids[i] + [pad_id] * (width - len(ids[i])) for i in rows], device=device)
        mask = torch.tensor([[1] * len(ids[i]) + [0] * (width - len(ids[i])) for i in rows], device=device)
        logits = model(input_ids=input_ids, attention_mask=mask).logits
        for row, i in enumerate(rows):  # one row at a time: a float32 copy of the logits stays one row's size
            n = len(ids[i])
            losses[i] = float(torch.nn.functional.cross_entropy(logits[row, : n - 1].float(), input_ids[row, 1:n]))
        del logits
    return losses


def difference(base: list[float], tuned: list[float]) -> dict:
    """Fine-tuned minus base, paired by document, with its 95% bootstrap interval: above 0, the
    fine-tuned model finds general text less likely than the base did."""
    return {"base_loss": round(sum(base) / len(base), 4), "finetuned_loss": round(sum(tuned) / len(tuned), 4),
            **paired_difference(base, tuned, binary=False), "documents": len(base)}
