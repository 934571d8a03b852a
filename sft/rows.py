"""Prepared rows: each record as {"id", "prompt", "completion", "references"} through its source's
templates or shape, ids unique within a split, and within prepare.max_length (never truncated)."""

from __future__ import annotations

from sft import mixture, shapes, tokens
from sft.params import UserError
from sft.preparation import PrepareParams
from sft.prompts import Templates
from sft.sources import Record

WHERE = "_where"  # where a record came from (file:line), for errors; never written to the prepared splits
SOURCE = "_source"  # which source of a mixture a record came from (its index), for the counts; never written


def written(row: dict) -> dict:
    """A row as the prepared splits hold it: without where it came from."""
    return {k: v for k, v in row.items() if k not in (WHERE, SOURCE)}


def convert(records: list[Record], p: PrepareParams, templates: Templates | None, references: list[str],
            source: int = 0, prefix: str = "", scored: bool = True) -> list[dict]:
    """Records as prepared rows; `prefix` keeps ids unique across the sources of a mixture. Records
    that are `scored` (validation and test) must hold the fields the task's metric reads."""
    if not records:
        return []
    to_chat = shapes.converter(p.shape, records[0].fields, templates is not None)
    rows = []
    for r in records:
        prompt, completion = shapes.non_empty(*to_chat(r.fields, r.where, templates), r.where)
        missing = [k for k in references if r.fields.get(k) is None]
        if missing and scored:
            raise UserError(f"{r.where}: field(s) {missing} missing or null; the task's metric needs them "
                            f"(references in {p.prompts}/task.yaml)")
        rid = r.fields.get("id", r.where)
        rows.append({"id": f"{prefix}{rid}" if prefix else rid, "prompt": prompt, "completion": completion,
                     "references": {k: r.fields.get(k) for k in references}, WHERE: r.where, SOURCE: source})
    return rows


def check_unique_ids(rows: list[dict], split: str) -> None:
    """Predictions are paired by id (compare, select): two records of a split may not share one.
    A record a mixture draws twice is the same record (same origin), not a clash."""
    first: dict = {}
    for row in rows:
        where = first.setdefault(row["id"], row[WHERE])
        if where != row[WHERE]:
            raise UserError(f"{row[WHERE]}: id {row['id']!r} is also the id of {where} ({split} split); ids must be "
                            "unique within a split: fix the data, or drop the id column (records are then named by "
                            "where they come from)")


def converted(pairs: list[tuple[int, Record]], p: PrepareParams, mix: list[mixture.Source],
              templates: list[Templates | None], references: list[str], scored: bool) -> list[dict]:
    """Each record through its own source's templates, in the order given."""
    rows: list[dict | None] = [None] * len(pairs)
    for i, source in enumerate(mix):
        at = [k for k, (s, _) in enumerate(pairs) if s == i]
        prefix = f"{source.name}/" if len(mix) > 1 else ""
        for k, row in zip(at, convert([pairs[k][1] for k in at], p, templates[i], references, i, prefix,
                                                      scored), strict=True):
            rows[k] = row
    return rows


def within_length(rows: list[dict], tokenized: list[tokens.Tokenized], split: str, max_length: int,
                  on_too_long: str) -> tuple[list[dict], list[tokens.Tokenized], int]:
    """Records over max_length: an error naming them, or dropped and counted. Never truncated. A
    test record is measured by its prompt, the part a model reads: dropping test records by the
    length of their gold would bias the test figures toward short answers."""
    length = tokens.prompt_length if split == "test" else (lambda t: len(t.input_ids))
    long = [i for i, t in enumerate(tokenized) if length(t) > max_length]
    if long and on_too_long == "error":
        named = ", ".join(f"{rows[i][WHERE]} ({length(tokenized[i])} tokens)" for i in long[:10])
        what = "record(s) whose prompt is" if split == "test" else "record(s)"
        raise UserError(f"{len(long)} {split} {what} longer than prepare.max_length={max_length}: {named}"
                        f"{' ...' if len(long) > 10 else ''}; raise prepare.max_length, or set "
                        "prepare.on_too_long: drop (completions are never truncated)")
    dropped = set(long)
    keep = [i for i in range(len(rows)) if i not in dropped]
    return [rows[i] for i in keep], [tokenized[i] for i in keep], len(long)
