"""The select section of params.yaml: how the best checkpoint is chosen (a figure of the
trainer's logs, or of the task metric on generated validation replies)."""

from __future__ import annotations

from dataclasses import dataclass

from sft.models import DTYPES
from sft.params import one_of, ranged


@dataclass
class SelectParams:
    metric: str = "eval_loss"  # a key of the trainer's evaluation logs, or a figure of the task metric
    greater_is_better: bool | None = None  # None: false for names ending in 'loss', true otherwise
    samples: int = ranged(32, low=1)  # validation prompts generated per checkpoint when selecting by a task figure
    max_new_tokens: int = ranged(64, low=1)  # a reply longer than this is cut (and most likely wrong)
    batch_size: int = ranged(16, low=1)  # prompts generated together
    dtype: str = "float32"  # the candidates' weights while generating

    def __post_init__(self):
        one_of("select", "dtype", self.dtype, DTYPES)
