"""The prepare section of params.yaml: the dataset (or a mixture), its prompts, splits and
subsets, and the token budget a record may use."""

from __future__ import annotations

from dataclasses import dataclass, field

from sft.params import UserError, one_of, ranged

# The choices of the section, here with its schema so that it imports nothing heavier than params:
# a stage that reads prepare's section (the card) need not run prepare's code.
SPLITS = ("train", "validation", "test")
TOO_LONG = ("error", "drop")
SHAPES = ("template", "messages", "prompt_completion", "alpaca", "sharegpt")  # sft/shapes.py: one converter each
TRAIN_ON = ("all_assistant", "last")  # sft/tokens.py: which assistant turns carry loss
EVAL_SOURCES = ("all", "first")  # sft/mixture.py: where a mixture's validation and test records come from


@dataclass
class PrepareParams:
    dataset: str = "data/raw/sql"  # local folder/file, or a hub id such as gretelai/synthetic_text_to_sql
    subset: str | None = None  # hub configuration, or a subfolder of a local dataset (e.g. fr_de)
    revision: str | None = None  # hub commit of the dataset; pin one for reproducibility
    prompts: str = "prompts/sql"  # {system,user,assistant}.jinja (optional for chat-shaped data) and task.yaml
    shape: str = "auto"  # auto | template | messages | prompt_completion | alpaca | sharegpt
    seed: int = 42  # shuffles, splits and subsets
    max_records: dict = field(default_factory=dict)  # per split, e.g. {train: 320}; absent = all records
    split_fractions: dict = field(default_factory=lambda: {"validation": 0.1, "test": 0.1})  # only train exists
    max_length: int = ranged(1024, low=1)  # tokens a record may have (trl's name and default); train gets it from here
    on_too_long: str = "error"  # a record over max_length: error (never truncated silently) | drop
    train_on: str = "all_assistant"  # which assistant turns carry loss: all_assistant | last (the completion only)
    audit_examples: int = ranged(3, low=0)  # rendered examples in audit.md
    datasets: list = field(default_factory=list)  # a mixture (sft/mixture.py): [{dataset, subset, revision, prompts,
    #   weight}, ...] in place of dataset/subset/revision; empty: the single dataset above
    eval_sources: str = "all"  # a mixture's validation and test records: from every source (all) | the first only

    def __post_init__(self):
        one_of("prepare", "on_too_long", self.on_too_long, TOO_LONG)
        one_of("prepare", "shape", self.shape, ("auto", *SHAPES))
        one_of("prepare", "train_on", self.train_on, TRAIN_ON)
        one_of("prepare", "eval_sources", self.eval_sources, EVAL_SOURCES)
        for split, count in self.max_records.items():
            one_of("prepare", "max_records", split, SPLITS)
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise UserError(f"params.yaml: prepare.max_records.{split} is {count!r}; it must be a whole number "
                                "of records, at least 1 (leave the split out to keep all)")
        for split, share in self.split_fractions.items():
            one_of("prepare", "split_fractions", split, ("validation", "test"))
            if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share < 1:
                raise UserError(f"params.yaml: prepare.split_fractions.{split} is {share!r}; it must be a share of "
                                "the train split, >= 0 and < 1")
        if sum(self.split_fractions.values()) >= 1:
            raise UserError(f"params.yaml: prepare.split_fractions sum to {sum(self.split_fractions.values())}; "
                            "they must leave records for train (sum < 1)")
