"""Dataset mixtures: `prepare.datasets`, a list of sources mixed into one train split.

Each source takes `dataset`, `subset`, `revision`, `prompts` (its templates; default
`prepare.prompts`) and `weight`: a share of the mixed train split (a float, the shares summing
to 1; the mixed split is as large as all sources' train splits together), or a record count (an
integer); without a weight, all its records. More than a source holds means its records repeat
(whole copies first, then a seeded draw), said in the log. Validation and test come from every
source, or from the first only (`prepare.eval_sources: first`). The run has one metric, the one
`prepare.prompts/task.yaml` names.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from sft import hub
from sft.params import UserError, from_dict
from sft.sources import hub_id


@dataclass
class Source:
    dataset: str
    subset: str | None = None
    revision: str | None = None
    prompts: str | None = None  # the source's templates; None: prepare.prompts
    weight: float | int | None = None  # share of the mixed train split (float), a record count (int), None: all

    @property
    def name(self) -> str:
        """A short name for ids and logs: the folder or hub name, and the subset."""
        base = Path(self.dataset).stem if Path(self.dataset).suffix else Path(self.dataset).name
        return f"{base}.{self.subset}" if self.subset else base


def sources(entries: list, dataset: str, subset: str | None, revision: str | None, prompts: str) -> list[Source]:
    """The mixture's sources, or the single dataset as one source with all its records."""
    if not entries:
        return [Source(dataset, subset, revision, prompts)]
    out = []
    for i, entry in enumerate(entries):
        where = f"params.yaml: prepare.datasets[{i}]"
        if not isinstance(entry, dict) or "dataset" not in entry:
            raise UserError(f"{where} must be a mapping with at least 'dataset' (and optionally subset, revision, "
                            "prompts, weight)")
        source = from_dict(Source, entry, where)
        if source.prompts is None:
            source.prompts = prompts
        out.append(source)
    check_weights(out)
    names = [s.name for s in out]
    if len(set(names)) < len(names):
        raise UserError(f"params.yaml: prepare.datasets names the same source twice ({names}); give each once "
                        "and use its weight to repeat it")
    return out


def check_weights(sources: list[Source]) -> None:
    kinds = {type(s.weight) for s in sources}
    if float in kinds and kinds != {float}:
        raise UserError("params.yaml: prepare.datasets mixes shares (floats) with counts or missing weights; give "
                        "every source a share (summing to 1.0) or every source a count")
    for s in sources:
        if isinstance(s.weight, float) and not 0 < s.weight <= 1:
            raise UserError(f"params.yaml: prepare.datasets weight {s.weight} of {s.name} is not a share in (0, 1]; "
                            "write a count as a whole number (300), a share as a fraction (0.3)")
        if isinstance(s.weight, int) and s.weight < 1:
            raise UserError(f"params.yaml: prepare.datasets weight {s.weight} of {s.name} must be at least 1 record")
    if kinds == {float} and abs(sum(s.weight for s in sources) - 1) > 1e-6:
        raise UserError(f"params.yaml: prepare.datasets shares sum to {sum(s.weight for s in sources):g}; "
                        "they must sum to 1.0")


def train_counts(sources: list[Source], available: list[int]) -> list[int]:
    """Records each source gives the mixed train split."""
    if all(isinstance(s.weight, float) for s in sources):
        total = sum(available)
        return [round(s.weight * total) for s in sources]
    return [n if s.weight is None else s.weight for s, n in zip(sources, available, strict=True)]


def drawn(records: list, count: int, rng: random.Random) -> list:
    """`count` records: a seeded sample, or whole copies then a sample when count exceeds them."""
    if count <= len(records):
        return records if count == len(records) else rng.sample(records, count)
    copies, rest = divmod(count, len(records))
    return records * copies + rng.sample(records, rest)


def check_metrics(sources: list[Source], task, eval_sources: str, prompts: str) -> None:
    """A source scored in the test split whose own task.yaml names another metric is an error: the
    run has one metric (prepare.prompts'), and a mixed test split would score some records wrongly."""
    from sft.task import load_task

    for i, source in enumerate(sources):
        own = Path(source.prompts) / "task.yaml"
        if source.prompts == prompts or not own.is_file() or (i > 0 and eval_sources == "first"):
            continue
        metric = load_task(source.prompts).metric
        if metric != task.metric:
            raise UserError(f"{own} names metric {metric}, but the run scores with {task.metric} ({prompts}/task.yaml) "
                            f"and {source.name}'s test records are in the test split; set prepare.eval_sources: first "
                            "(test from the first source only), or mix sources of one metric")


def source_counts(sources: list[Source], available: list[dict], taken: dict[str, list[int]]) -> dict:
    """Per source: what it holds and what the prepared splits took from it (`taken`: each split's
    records as source indices), per split."""
    return {s.name: {"dataset": s.dataset, "subset": s.subset, "revision": s.revision, "weight": s.weight,
                     "available": available[i], "records": {name: split.count(i) for name, split in taken.items()}}
            for i, s in enumerate(sources)}


def resolved_revisions(mix: list[Source]) -> dict:
    """The commit each hub dataset's revision resolved to, where the hub answered (nothing offline,
    so an offline run's metrics do not depend on the network)."""
    found = {s.name: hub.resolved_revision(hub_id(s.dataset) or s.dataset, s.revision, "dataset") for s in mix}
    return {"resolved_revisions": {k: v for k, v in found.items() if v}} if any(found.values()) else {}


def untracked(folders: set[str]) -> list[str]:
    """Prompt folders outside prompts/ (dvc.yaml's dep): DVC does not see them change."""
    tracked = Path("prompts").resolve()
    return sorted(f for f in folders if not Path(f).resolve().is_relative_to(tracked))
