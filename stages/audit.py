"""The token view of prepared records, through the model's own chat template.

What the trainer sees: the prompt rendered with the assistant header (no loss), then the
completion (the loss). Lengths decide `max_length`; the audit shows the spans to a human.
"""

from __future__ import annotations

from dataclasses import dataclass

from stages.params import UserError


@dataclass
class TokenCounts:
    total: list[int]  # prompt + completion tokens per record
    prompt: list[int]  # tokens that carry no loss


def chat_texts(tokenizer, rows: list[dict]) -> tuple[list[str], list[str]]:
    prompts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows]
    full = [tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in rows]
    return prompts, full


def token_counts(tokenizer, rows: list[dict]) -> TokenCounts:
    if not rows:
        return TokenCounts([], [])
    prompts, full = chat_texts(tokenizer, rows)
    # One batched call per side: the Rust tokenizer does 100,000 records in seconds.
    total = [len(ids) for ids in tokenizer(full, add_special_tokens=False)["input_ids"]]
    prompt = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    return TokenCounts(total, prompt)


def percentiles(values: list[int]) -> dict:
    if not values:
        return {"p50": 0, "p95": 0, "max": 0}
    ordered = sorted(values)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": at(0.5), "p95": at(0.95), "max": ordered[-1]}


def label_share(counts: TokenCounts) -> float:
    total = sum(counts.total)
    return round((total - sum(counts.prompt)) / total, 4) if total else 0.0


def marked_example(tokenizer, row: dict) -> str:
    """One record as the trainer sees it: «masked prompt» then ⟦trained completion⟧."""
    [prompt], [full] = chat_texts(tokenizer, [row])
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise UserError("the chat template does not render the prompt as a prefix of prompt + completion, "
                        "so prompt and completion tokens cannot be told apart; use a prefix-stable template")
    masked = tokenizer.decode(full_ids[: len(prompt_ids)])
    trained = tokenizer.decode(full_ids[len(prompt_ids):])
    return f"«{masked}»⟦{trained}⟧"


def report(tokenizer, rows_by_split: dict[str, list[dict]], counts: dict[str, TokenCounts], examples: int) -> str:
    lines = ["# Render audit", "",
             "Each example as the trainer sees it: «prompt, no loss» then ⟦completion, trained⟧.", "",
             "| split | records | tokens p50 | p95 | max | label share |", "|---|---|---|---|---|---|"]
    for split, c in counts.items():
        s = percentiles(c.total)
        lines.append(f"| {split} | {len(c.total)} | {s['p50']} | {s['p95']} | {s['max']} | {label_share(c):.1%} |")
    for row in rows_by_split.get("train", [])[:examples]:
        lines += ["", f"## train record {row['id']}", "", "```", marked_example(tokenizer, row), "```"]
    return "\n".join(lines) + "\n"
