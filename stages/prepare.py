"""prepare: load a dataset, render every record through the task's templates, split, write.

    python -m stages.prepare --out data/prepared --metrics metrics/prepare.json

Reads `prepare:` of params.yaml. The dataset is a local folder or file (JSONL, JSON, CSV,
Parquet) or a hub id (at `prepare.revision`). Each record becomes
{"prompt": [system, user messages], "completion": [assistant message]} plus the fields the
task's metric needs (`references` in prompts/<dataset>/task.yaml).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path

from stages.files import write_json, write_jsonl
from stages.params import UserError, load, run
from stages.prompts import Templates, load_task, load_templates

SPLITS = ("train", "validation", "test")
LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class PrepareParams:
    dataset: str = "data/sql"  # local folder/file, or a hub id such as gretelai/synthetic_text_to_sql
    subset: str | None = None  # hub dataset configuration (e.g. fr_de)
    revision: str | None = None  # hub commit/tag of the dataset
    prompts: str = "prompts/sql"  # folder with {system,user,assistant}.jinja and task.yaml
    seed: int = 42  # shuffles and subsets
    max_records: dict = field(default_factory=dict)  # per split, e.g. {train: 320}; absent = all
    split_fractions: dict = field(default_factory=lambda: {"validation": 0.1, "test": 0.1})  # when only train exists


def load_raw(p: PrepareParams) -> dict[str, list[dict]]:
    """Records per split, from a local path or the hub, with `datasets`."""
    import datasets

    path = Path(p.dataset)
    try:
        if path.is_file():
            fmt = LOCAL_FORMATS.get(path.suffix)
            if fmt is None:
                raise UserError(f"{path}: unsupported file type; use one of {sorted(LOCAL_FORMATS)}")
            ds = datasets.load_dataset(fmt, data_files={"train": str(path)})
        else:
            ds = datasets.load_dataset(p.dataset, p.subset, revision=p.revision)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as e:
        raise UserError(f"cannot load dataset '{p.dataset}'" + (f" subset '{p.subset}'" if p.subset else "")
                        + f": {e}") from e
    return {name: split.to_list() for name, split in ds.items()}


def split_records(raw: dict[str, list[dict]], p: PrepareParams) -> dict[str, list[dict]]:
    """The dataset's own splits where they exist; otherwise cut them from train with the seed."""
    rng = random.Random(p.seed)
    splits = {"train": list(raw.get("train") or [])}
    if not splits["train"]:
        raise UserError(f"dataset '{p.dataset}' has no train split; it has {sorted(raw)}")
    rng.shuffle(splits["train"])
    for name in ("test", "validation"):
        if raw.get(name):
            splits[name] = list(raw[name])
            continue
        # The workshop's rule: a missing validation split is cut from train, the size of test.
        size = len(raw["test"]) if name == "validation" and raw.get("test") \
            else round(len(raw["train"]) * float(p.split_fractions.get(name, 0.1)))
        splits[name], splits["train"] = splits["train"][:size], splits["train"][size:]
    return splits


def subset(records: list[dict], limit: int | None, rng: random.Random) -> list[dict]:
    if limit is None or limit >= len(records):
        return records
    return rng.sample(records, limit)


def render(records: list[dict], split: str, templates: Templates, references: list[str],
           source: str) -> list[dict]:
    rows = []
    for i, record in enumerate(records, 1):
        where = f"{source} [{split}] record {i}"
        prompt, completion = templates.messages(record, where)
        missing = [k for k in references if record.get(k) is None]
        if missing:
            raise UserError(f"{where}: field(s) {missing} missing or null; the metric needs them")
        rows.append({"id": record.get("id", i), "prompt": prompt, "completion": completion,
                     "references": {k: record[k] for k in references}})
    return rows


def without_overlap(rows: dict[str, list[dict]]) -> tuple[dict[str, list[dict]], int]:
    """Drop train and validation records whose prompt is also an evaluation prompt."""
    held_out = {repr(r["prompt"]) for r in rows["test"]}
    dropped = 0
    for name in ("validation", "train"):
        kept = [r for r in rows[name] if repr(r["prompt"]) not in held_out]
        dropped += len(rows[name]) - len(kept)
        rows[name] = kept
        held_out |= {repr(r["prompt"]) for r in kept} if name == "validation" else set()
    return rows, dropped


def main() -> None:
    ap = argparse.ArgumentParser(description="Render and split the dataset.")
    ap.add_argument("--out", default="data/prepared")
    ap.add_argument("--metrics", default="metrics/prepare.json")
    args = ap.parse_args()
    p = load("prepare", PrepareParams)
    unknown = set(p.max_records) - set(SPLITS)
    if unknown:
        raise UserError(f"params.yaml: prepare.max_records: unknown split(s) {sorted(unknown)}; use {SPLITS}")

    templates, task = load_templates(p.prompts), load_task(p.prompts)
    splits = split_records(load_raw(p), p)
    rng = random.Random(p.seed)
    rows = {name: render(subset(splits[name], p.max_records.get(name), rng), name, templates,
                         task.references, p.dataset) for name in SPLITS}
    rows, dropped = without_overlap(rows)

    out = Path(args.out)
    for name in SPLITS:
        write_jsonl(out / f"{name}.jsonl", rows[name])
    write_json(out / "task.json", dataclasses.asdict(task))
    counts = {name: len(rows[name]) for name in SPLITS}
    write_json(args.metrics, {"records": counts, "available": {k: len(v) for k, v in splits.items()},
                              "dropped_overlap": dropped})
    print(f"[prepare] wrote {out}: {counts}, {dropped} overlapping records dropped", flush=True)


if __name__ == "__main__":
    run(main)
