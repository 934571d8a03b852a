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

from sft import handoff, mixture, tokens
from sft.files import write_json, write_jsonl, write_text
from sft.params import UserError, load, run
from sft.preparation import SPLITS, PrepareParams
from sft.prompts import load_templates
from sft.rows import SOURCE, check_unique_ids, converted, within_length, written
from sft.splits import mixed, subset, without_overlap
from sft.task import TASK_FILE, check_golds, load_task, task_json


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
    for folder in mixture.untracked({s.prompts for s in mix}):
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
        write_jsonl(out / f"{name}.jsonl", [written(r) for r in rows[name]])
    write_json(out / TASK_FILE, task_json(task))
    handoff.write(out, {name: tokenized[name] for name in handoff.TRAINED_SPLITS}, p.max_length, p.train_on)
    write_text(out / "audit.md", tokens.report(tokenizer, rows["train"], tokenized["train"], counts, p.audit_examples))
    write_json(args.metrics, {
        "records": {name: len(rows[name]) for name in SPLITS},
        "available": {name: len(splits[name]) for name in SPLITS},
        "dropped_overlap": overlap, "dropped_too_long": too_long,
        "tokens": {name: tokens.percentiles(counts[name].total) for name in SPLITS},
        "label_share": {name: tokens.label_share(counts[name]) for name in SPLITS},
        **mixture.resolved_revisions(mix),
        **({"sources": mixture.source_counts(
            mix, available, {name: [r[SOURCE] for r in rows[name]] for name in SPLITS})} if len(mix) > 1 else {}),
    })
    print(f"[prepare] wrote {out}: { {n: len(rows[n]) for n in SPLITS} }; overlap dropped {overlap}, "
          f"too long {too_long}", flush=True)


if __name__ == "__main__":
    run(main)
