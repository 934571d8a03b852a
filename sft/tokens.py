"""The token view of prepared records, through the model's own chat template.

What the trainer sees: one conversation's tokens and, per token, whether it carries loss. Loss
is on assistant turns only: every assistant turn (`prepare.train_on: all_assistant`) or the last
one (`last`), each turn's end-of-turn tokens included; system, user and tool tokens never.
trl's own `assistant_only_loss` needs `{% generation %}` markers that most chat templates lack,
so the spans come from renderings of the conversation cut at each trained turn: the tokens
between "turns before it + the assistant header" and "turns up to and with it". With one trained
turn this is exactly trl's prompt-completion masking (tests/test_tokens.py checks).
Lengths decide `max_length`; the audit shows the spans to a human.
"""

from __future__ import annotations

from dataclasses import dataclass

from sft.params import UserError


@dataclass
class Tokenized:
    input_ids: list[int]
    assistant_masks: list[int]  # 1 where the token carries loss (trl's column name)


@dataclass
class TokenCounts:
    total: list[int]  # tokens per record
    trained: list[int]  # tokens that carry loss


COMPLETION_MARK = "\x00"  # marks where the completion starts in one rendering of the whole conversation
CHECKED = 32  # records on which every shortcut is compared with the plain way


def fast_tokenizer(folder):
    """The folder's fast tokenizer and chat template. PreTrainedTokenizerFast loads in 0.9 s
    where AutoTokenizer takes 4.8 s (it imports the model's config and modeling code)."""
    from pathlib import Path

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (Path(folder) / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def conversation(row: dict) -> list[dict]:
    return row["prompt"] + row["completion"]


def trained_turns(row: dict, train_on: str) -> list[int]:
    """Indices (in the conversation) of the assistant turns that carry loss."""
    turns = [i for i, turn in enumerate(conversation(row)) if turn["role"] == "assistant"]
    return turns if train_on == "all_assistant" else turns[-1:]


def chat_texts(tokenizer, rows: list[dict]) -> tuple[list[str], list[str]]:
    """(prompt with the assistant header, whole conversation) as the chat template renders them.

    One batched rendering with a sentinel at the start of the completion gives both; the first
    records are checked against two separate renderings, which are used if they differ.
    """
    marked = rendered(tokenizer, rows, [r["prompt"] + [{**r["completion"][0], "content": COMPLETION_MARK +
                                                          r["completion"][0]["content"]}] for r in rows])
    if all(text.count(COMPLETION_MARK) == 1 for text in marked):
        prompts = [text[: text.index(COMPLETION_MARK)] for text in marked]
        full = [text.replace(COMPLETION_MARK, "", 1) for text in marked]
        sample = rows[:CHECKED]
        if (prompts[:CHECKED], full[:CHECKED]) == plain_chat_texts(tokenizer, sample):
            return prompts, full
    return plain_chat_texts(tokenizer, rows)


def rendered(tokenizer, rows: list[dict], conversations: list[list[dict]], **kwargs) -> list[str]:
    """The chat template applied to each conversation; one the template refuses (a role it does not
    know, turns it wants in another order) is an error naming the record."""
    import jinja2

    if not conversations:
        return []
    try:
        return tokenizer.apply_chat_template(conversations, tokenize=False, **kwargs)
    except (jinja2.TemplateError, ValueError, KeyError, TypeError):
        for row, conversation in zip(rows, conversations, strict=True):
            try:
                tokenizer.apply_chat_template(conversation, tokenize=False, **kwargs)
            except (jinja2.TemplateError, ValueError, KeyError, TypeError) as e:
                roles = [turn["role"] for turn in conversation]
                raise UserError(f"{where(row)}: the model's chat template cannot render this "
                                f"conversation (roles {roles}): {e}; drop or fix the record, or use a model "
                                "whose template knows these roles") from None
        raise


def where(row: dict) -> str:
    return str(row.get("_where", row["id"]))


def plain_chat_texts(tokenizer, rows: list[dict]) -> tuple[list[str], list[str]]:
    prompts = rendered(tokenizer, rows, [r["prompt"] for r in rows], add_generation_prompt=True)
    full = rendered(tokenizer, rows, [r["prompt"] + r["completion"] for r in rows])
    return prompts, full


def common_prefix_length(a: list[int], b: list[int]) -> int:
    if b[: len(a)] == a:  # the usual case, compared at C speed
        return len(a)
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def cut_texts(tokenizer, rows: list[dict], train_on: str) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """Per record: the whole conversation's text, and per trained turn (text before it with the
    assistant header, text up to and with it). Records with one trained turn take the one-pass
    rendering of chat_texts; the others are rendered once per cut."""
    turns = [trained_turns(r, train_on) for r in rows]
    single = [i for i, t in enumerate(turns) if t == [len(conversation(rows[i])) - 1]]
    full: list[str] = [""] * len(rows)
    cuts: list[list[tuple[str, str]]] = [[] for _ in rows]
    prompts, texts = chat_texts(tokenizer, [rows[i] for i in single])
    for i, prompt, text in zip(single, prompts, texts, strict=True):
        full[i], cuts[i] = text, [(prompt, text)]
    one = set(single)
    many = [i for i in range(len(rows)) if i not in one]
    many_rows = [rows[i] for i in many]
    for i, text in zip(many, rendered(tokenizer, many_rows, [conversation(r) for r in many_rows]), strict=True):
        full[i] = text
    at = [(i, k) for i in many for k in turns[i]]
    at_rows = [rows[i] for i, _ in at]
    before = rendered(tokenizer, at_rows, [conversation(rows[i])[:k] for i, k in at], add_generation_prompt=True)
    through = rendered(tokenizer, at_rows, [conversation(rows[i])[:k + 1] for i, k in at])
    for (i, _), b, t in zip(at, before, through, strict=True):
        cuts[i].append((b, t))
    return full, cuts


def tokenized(tokenizer, rows: list[dict], train_on: str) -> list[Tokenized]:
    """Each record's tokens and loss mask, as the trainer gets them.

    A trained span starts where the tokens of "before the turn + assistant header" stop matching
    the whole conversation's tokens, and ends where the tokens of "up to and with the turn" do
    (trl's common-prefix rule for prompt-completion, applied per turn: by_prefixes). Encoding every
    cut doubles the tokenizing, so the spans are read from the whole conversation's character
    offsets instead (by_offsets), checked against the plain way on the first records.
    """
    if not rows:
        return []
    full, cuts = cut_texts(tokenizer, rows, train_on)
    fast = by_offsets(tokenizer, full, cuts)
    if fast is None or fast[:CHECKED] != by_prefixes(tokenizer, rows[:CHECKED], full[:CHECKED], cuts[:CHECKED]):
        return by_prefixes(tokenizer, rows, full, cuts)
    for i in [i for i, t in enumerate(fast) if t is None]:
        [fast[i]] = by_prefixes(tokenizer, [rows[i]], [full[i]], [cuts[i]])
    return fast


def by_offsets(tokenizer, full: list[str], cuts: list[list[tuple[str, str]]]) -> list[Tokenized | None] | None:
    """Masks from one encoding of each conversation: the span of a turn is from the token holding
    the first character after "before" (a token across that boundary is trained, as trl's
    divergence point is) to the token holding the first character after "through" (one across
    it is not). None for a record whose cuts are not text prefixes of the whole; None in all
    without a Rust tokenizer."""
    if not hasattr(tokenizer, "backend_tokenizer"):
        return None
    out = []
    for text, encoding, per_row in zip(full, tokenizer.backend_tokenizer.encode_batch(full, add_special_tokens=False),
                                       cuts, strict=True):
        ids = encoding.ids
        mask = [0] * len(ids)
        for before, through in per_row:
            if not (text.startswith(before) and text.startswith(through)):
                mask = None
                break
            start = encoding.char_to_token(len(before)) if len(before) < len(text) else len(ids)
            end = encoding.char_to_token(len(through)) if len(through) < len(text) else len(ids)
            if start is None or end is None:
                mask = None
                break
            mask[start:end] = [1] * (end - start)
        out.append(None if mask is None else Tokenized(ids, mask))
    return out


def by_prefixes(tokenizer, rows: list[dict], full: list[str], cuts: list[list[tuple[str, str]]]) -> list[Tokenized]:
    """Masks from encoding every cut: a template that renders earlier turns differently once the
    conversation goes on (some drop the reasoning of earlier assistant turns) cannot be masked
    per turn, which is an error naming the record."""
    # The last turn's "up to and with" is the whole conversation: not encoded twice.
    flat = []
    for text_full, per_row in zip(full, cuts, strict=True):
        for before, through in per_row:
            flat += [before] if through == text_full else [before, through]
    encoded = iter(encode(tokenizer, flat))
    out = []
    for row, text_full, ids, per_row in zip(rows, full, encode(tokenizer, full), cuts, strict=True):
        mask = [0] * len(ids)
        for _before, through in per_row:
            before_ids = next(encoded)
            through_ids = ids if through == text_full else next(encoded)
            start, end = common_prefix_length(before_ids, ids), common_prefix_length(through_ids, ids)
            if end < len(through_ids) - 1 or start < len(before_ids) - 1:
                raise UserError(f"{where(row)}: the chat template renders earlier turns differently once the "
                                "conversation goes on, so the assistant turns' tokens cannot be found in the whole "
                                "conversation; set prepare.train_on: last, or use a prefix-stable template")
            mask[start:end] = [1] * (end - start)
        out.append(Tokenized(ids, mask))
    return out


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of rendered texts (their special tokens are in the text already)."""
    if not texts:
        return []
    if hasattr(tokenizer, "backend_tokenizer"):  # the Rust tokenizer, batched in parallel
        return [e.ids for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def token_counts(tokenized_rows: list[Tokenized]) -> TokenCounts:
    return TokenCounts([len(t.input_ids) for t in tokenized_rows], [sum(t.assistant_masks) for t in tokenized_rows])


def percentiles(values: list[int]) -> dict:
    if not values:
        return {"p50": 0, "p95": 0, "max": 0}
    ordered = sorted(values)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": at(0.5), "p95": at(0.95), "max": ordered[-1]}


def label_share(counts: TokenCounts) -> float:
    total = sum(counts.total)
    return round(sum(counts.trained) / total, 4) if total else 0.0


def prompt_length(t: Tokenized) -> int:
    """Tokens before the final trained span: the prompt a generation reads (all of it if none)."""
    starts = [i for i, m in enumerate(t.assistant_masks) if m and (i == 0 or not t.assistant_masks[i - 1])]
    return starts[-1] if starts else len(t.input_ids)


def runs(t: Tokenized) -> list[tuple[bool, list[int]]]:
    """The record's tokens cut where the loss mask changes: (trained, token ids) in turn."""
    out, start = [], 0
    for i in range(1, len(t.input_ids) + 1):
        if i == len(t.input_ids) or t.assistant_masks[i] != t.assistant_masks[start]:
            out.append((bool(t.assistant_masks[start]), t.input_ids[start:i]))
            start = i
    return out


def marked_example(tokenizer, t: Tokenized) -> str:
    """One record as the trainer sees it: «no loss» and ⟦trained⟧ spans in turn."""
    return "".join(f"⟦{tokenizer.decode(ids)}⟧" if trained else f"«{tokenizer.decode(ids)}»" for trained, ids in runs(t))


def report(tokenizer, rows: list[dict], tokenized_rows: list[Tokenized], counts: dict[str, TokenCounts],
           examples: int) -> str:
    """audit.md: lengths and label share per split, and the first train records with their spans."""
    lines = ["# Render audit", "",
             "Each example as the trainer sees it: «no loss» then ⟦trained⟧, for every trained assistant turn.", "",
             "| split | records | tokens p50 | p95 | max | label share |", "|---|---|---|---|---|---|"]
    for split, c in counts.items():
        s = percentiles(c.total)
        lines.append(f"| {split} | {len(c.total)} | {s['p50']} | {s['p95']} | {s['max']} | {label_share(c):.1%} |")
    for row, t in list(zip(rows, tokenized_rows, strict=True))[:examples]:
        lines += ["", f"## train record {row['id']}", "", "```", marked_example(tokenizer, t), "```"]
    return "\n".join(lines) + "\n"
