"""prepare: load a dataset, turn every record into chat prompt-completion, split, check, write.

    python -m stages.prepare --model models/base --out data/prepared --metrics metrics/prepare.json

Reads `prepare:` of params.yaml. The dataset is a local file or folder
(JSONL, JSON, CSV, Parquet) or a hub id at `prepare.revision`, or a mixture of several
(`prepare.datasets`, sft/mixture.py); its records may be any columns rendered through
prompts/<dataset>/*.jinja, or already `messages`, `prompt`/`completion`, alpaca or ShareGPT
(`prepare.shape`, detected by default). Each prepared record is {"id", "prompt": [the turns
before the last answer], "completion": [the last assistant turn], "references"}. Next to the
splits: task.json (the metric), audit.md (the trained spans, token lengths, label share), and
what train reads (sft/handoff.py): each trained split's token ids and loss masks, tokenized once
here through the model's chat template, and tokens.json (max_length, train_on).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from sft import handoff, hub, mixture, shapes, sources, tokens
from sft.files import write_json, write_jsonl, write_text
from sft.params import UserError, load, run
from sft.preparation import SPLITS, PrepareParams
from sft.prompts import Templates, load_templates
from sft.sources import Record
from sft.task import TASK_FILE, check_golds, load_task, task_json

WHERE = "_where"  # where a record came from (file:line), for errors; never written to the prepared splits
SOURCE = "_source"  # which source of a mixture a record came from (its index), for the counts; never written


def split_records(raw: dict[str, list[Record]], p: PrepareParams) -> dict[str, list[Record]]:
    """The dataset's own splits where they exist; otherwise cut them from train with the seed."""
    if not raw.get("train"):
        raise UserError(f"dataset '{p.dataset}' has no train split (or it is empty); it has {sorted(raw)}")
    rng = random.Random(p.seed)
    train = list(raw["train"])
    rng.shuffle(train)
    splits = {}
    for name in ("test", "validation"):
        if raw.get(name):
            splits[name] = list(raw[name])
            continue
        # The workshop's rule: a missing validation split is cut from train, the size of test.
        size = len(raw["test"]) if name == "validation" and raw.get("test") \
            else round(len(raw["train"]) * float(p.split_fractions.get(name, 0.1)))
        splits[name], train = train[:size], train[size:]
    splits["train"] = train
    return {name: splits[name] for name in SPLITS}


def subset(records: list, limit: int | None, rng: random.Random) -> list:
    if limit is None or limit >= len(records):
        return records
    return rng.sample(records, limit)


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


def mixed(mix: list[mixture.Source], p: PrepareParams) -> tuple[dict[str, list[tuple[int, Record]]], list[dict]]:
    """Every split as (source index, record) pairs: train drawn by the weights, validation and test
    from every source (or the first); and each source's available records per split."""
    loaded = [split_records(sources.load(s.dataset, s.subset, s.revision), p) for s in mix]
    wanted = mixture.train_counts(mix, [len(splits["train"]) for splits in loaded])
    rng = random.Random(p.seed)
    out: dict[str, list[tuple[int, Record]]] = {name: [] for name in SPLITS}
    for i, (source, splits, count) in enumerate(zip(mix, loaded, wanted, strict=True)):
        if count > len(splits["train"]):
            print(f"[prepare] {source.name}: {count} train records from {len(splits['train'])}: records repeat "
                  f"({count / len(splits['train']):.2f} times on average)", flush=True)
        out["train"] += [(i, r) for r in mixture.drawn(splits["train"], count, rng)]
        if i == 0 or p.eval_sources == "all":
            for name in ("validation", "test"):
                out[name] += [(i, r) for r in splits[name]]
    return out, [{name: len(splits[name]) for name in SPLITS} for splits in loaded]


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


def without_overlap(rows: dict[str, list[dict]]) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """Drop validation and train records whose prompt is in a later-evaluated split (test first)."""
    held_out = {repr(r["prompt"]) for r in rows["test"]}
    dropped = {}
    for name in ("validation", "train"):
        kept = [r for r in rows[name] if repr(r["prompt"]) not in held_out]
        dropped[name] = len(rows[name]) - len(kept)
        rows[name] = kept
        held_out |= {repr(r["prompt"]) for r in kept}
    return rows, dropped


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


def resolved_revisions(mix: list[mixture.Source]) -> dict:
    """The commit each hub dataset's revision resolved to, where the hub answered (nothing offline,
    so an offline run's metrics do not depend on the network)."""
    found = {s.name: hub.resolved_revision(sources.hub_id(s.dataset) or s.dataset, s.revision, "dataset") for s in mix}
    return {"resolved_revisions": {k: v for k, v in found.items() if v}} if any(found.values()) else {}


def untracked(folders: set[str]) -> list[str]:
    """Prompt folders outside prompts/ (dvc.yaml's dep): DVC does not see them change."""
    tracked = Path("prompts").resolve()
    return sorted(f for f in folders if not Path(f).resolve().is_relative_to(tracked))


def main() -> None:
    ap = argparse.ArgumentParser(description="Render, split and check the dataset.")
    ap.add_argument("--model", default="models/base", help="folder whose tokenizer and chat template count tokens")
    ap.add_argument("--out", default="data/prepared")
    ap.add_argument("--metrics", default="metrics/prepare.json")
    args = ap.parse_args()
    p = load("prepare", PrepareParams)

    task = load_task(p.prompts)
    mix = mixture.sources(p.datasets, p.dataset, p.subset, p.revision, p.prompts)
    mixture.check_metrics(mix, task, p.eval_sources, p.prompts)
    templates = [load_templates(s.prompts) for s in mix]
    for folder in untracked({s.prompts for s in mix}):
        print(f"[prepare] note: {folder} is outside prompts/, which dvc.yaml tracks: an edit to it will not rerun "
              "prepare", flush=True)
    splits, available = mixed(mix, p)
    rng = random.Random(p.seed)
    rows = {name: converted(subset(splits[name], p.max_records.get(name), rng), p, mix, templates, task.references,
                            scored=name != "train") for name in SPLITS}
    for name in SPLITS:
        check_unique_ids(rows[name], name)
    rows, overlap = without_overlap(rows)
    tokenizer = tokens.fast_tokenizer(args.model)
    tokenized, too_long = {}, {}
    for name in SPLITS:
        rows[name], tokenized[name], too_long[name] = within_length(
            rows[name], tokens.tokenized(tokenizer, rows[name], p.train_on), name, p.max_length, p.on_too_long)
    counts = {name: tokens.token_counts(tokenized[name]) for name in SPLITS}
    for name in SPLITS:  # a split emptied by the checks (or no train at all) is an error, not a silent gap
        if not rows[name] and (name == "train" or overlap.get(name) or too_long[name]):
            raise UserError(f"no {name} records are left (of {len(splits[name])}: {overlap.get(name, 0)} share a "
                            f"prompt with a test record, {too_long[name]} are too long); check the dataset, "
                            "prepare.max_records and prepare.on_too_long")

    check_golds(task, [r["completion"][0]["content"] for r in rows["test"]], [r["references"] for r in rows["test"]],
                f"{p.prompts}/task.yaml")
    out = Path(args.out)
    for name in SPLITS:
        write_jsonl(out / f"{name}.jsonl", [{k: v for k, v in r.items() if k not in (WHERE, SOURCE)}
                                            for r in rows[name]])
    write_json(out / TASK_FILE, task_json(task))
    handoff.write(out, {name: tokenized[name] for name in handoff.TRAINED_SPLITS}, p.max_length, p.train_on)
    write_text(out / "audit.md", tokens.report(tokenizer, rows["train"], tokenized["train"], counts, p.audit_examples))
    write_json(args.metrics, {
        "records": {name: len(rows[name]) for name in SPLITS},
        "available": {name: len(splits[name]) for name in SPLITS},
        "dropped_overlap": overlap, "dropped_too_long": too_long,
        "tokens": {name: tokens.percentiles(counts[name].total) for name in SPLITS},
        "label_share": {name: tokens.label_share(counts[name]) for name in SPLITS},
        **resolved_revisions(mix),
        **({"sources": mixture.source_counts(
            mix, available, {name: [r[SOURCE] for r in rows[name]] for name in SPLITS})} if len(mix) > 1 else {}),
    })
    print(f"[prepare] wrote {out}: { {n: len(rows[n]) for n in SPLITS} }; overlap dropped {overlap}, "
          f"too long {too_long}", flush=True)


if __name__ == "__main__":
    run(main)
