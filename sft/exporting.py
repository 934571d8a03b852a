"""The export section of params.yaml (the GGUF type, its name, its parity and test checks), and a
quantized GGUF's own figures on the test split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sft import llamacpp
from sft.files import read_jsonl
from sft.generation import Settings, replies
from sft.params import one_of, ranged
from sft.scoring import scores
from sft.task import read_task


@dataclass
class ExportParams:
    outtype: str = "f16"  # f32 | f16 | bf16 | q8_0 (llama.cpp's converter) | q4_k_m, q5_k_m, q6_k, ... (its quantizer)
    parity_prompts: int = ranged(8, low=1)  # validation prompts of the parity check
    parity_max_new_tokens: int = ranged(32, low=1)
    min_greedy_agreement: float = ranged(0.9, low=0, high=1)  # share of decided positions where the GGUF picks the merged model's token
    test_max_new_tokens: int = ranged(64, low=1)  # quantized types: the test split's replies, scored by the task metric
    model_name: str = "sft-model"  # the name written inside the GGUF (general.name), which llama.cpp shows

    def __post_init__(self):
        one_of("export", "outtype", self.outtype, llamacpp.OUTTYPES)


def quantized_figures(llm, tokenizer, data: Path, max_new_tokens: int) -> dict:
    """The GGUF's own figures on the test split, scored as evaluate scores (its speed varies by
    machine and stays out of this hashed output)."""
    records = read_jsonl(data / "test.jsonl")
    answered, _ = replies((llm, tokenizer), [r["prompt"] for r in records], Settings(max_new_tokens), "llamacpp",
                          label="[export] the GGUF on the test split")
    return scores(read_task(data), answered, records).figures
