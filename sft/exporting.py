"""The export section of params.yaml: the GGUF type, its parity and test checks, and the model
card's names."""

from __future__ import annotations

from dataclasses import dataclass

from sft import llamacpp
from sft.params import one_of, ranged


@dataclass
class ExportParams:
    outtype: str = "f16"  # f32 | f16 | bf16 | q8_0 (llama.cpp's converter) | q4_k_m, q5_k_m, q6_k, ... (its quantizer)
    parity_prompts: int = ranged(8, low=1)  # validation prompts of the parity check
    parity_max_new_tokens: int = ranged(32, low=1)
    min_greedy_agreement: float = ranged(0.9, low=0, high=1)  # share of decided positions where the GGUF picks the merged model's token
    test_max_new_tokens: int = ranged(64, low=1)  # quantized types: the test split's replies, scored by the task metric
    # The card's base_model, a hub id (the embedded default's); None: base.model_name_or_path
    base_model: str | None = "HuggingFaceTB/SmolLM2-135M-Instruct"
    license: str = "apache-2.0"  # the model card's license: the base model's (gemma for Gemma)
    model_name: str = "sft-model"  # the card's title and the Ollama model name it suggests

    def __post_init__(self):
        one_of("export", "outtype", self.outtype, llamacpp.OUTTYPES)
