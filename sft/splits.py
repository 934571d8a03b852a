"""The dataset's splits as prepare makes them: the dataset's own or cut from train with the seed,
a mixture's splits drawn from every source, a subset of each, and no prompt shared with a split
evaluated later."""

from __future__ import annotations

import random

from sft import mixture, sources
from sft.params import UserError
from sft.preparation import SPLITS, PrepareParams
from sft.sources import Record


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
