"""The merge section of params.yaml: the merged model's precision and the parity check it must
pass against the trained one."""

from __future__ import annotations

from dataclasses import dataclass

from sft.models import DTYPES
from sft.params import one_of, ranged


@dataclass
class MergeParams:
    dtype: str = "float32"  # weights of the merged model; merge at full precision, never into 4-bit
    parity_prompts: int = ranged(8, low=1)  # validation prompts of the parity check
    parity_max_new_tokens: int = ranged(32, low=1)
    max_mean_kl: float = ranged(0.01, low=0)  # nats; fp32 merges measure ~1e-9, bf16 ones ~1e-3
    min_greedy_agreement: float = ranged(0.9, low=0, high=1)  # share of generated tokens the two models agree on

    def __post_init__(self):
        one_of("merge", "dtype", self.dtype, DTYPES)
