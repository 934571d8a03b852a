"""merge: fold the selected checkpoint's LoRA adapter into the base; one ready model folder.

    python -m stages.merge --base models/base --select metrics/select.json --out models/merged

Reads `merge:` of params.yaml. A full fine-tune's checkpoint is already a whole model and is
saved through as it is. The folder holds model, tokenizer, chat template and generation config.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from stages.files import atomic_dir
from stages.models import PIN_FILE, load_folder
from stages.params import UserError, load, run


@dataclass
class MergeParams:
    dtype: str = "float32"  # weights of the merged model; merge at full precision, never into 4-bit


def selected_checkpoint(select_file: str) -> Path:
    path = Path(select_file)
    if not path.is_file():
        raise UserError(f"{path} is missing; run the select stage first (dvc repro select)")
    checkpoint = Path(json.loads(path.read_text())["checkpoint"])
    if not checkpoint.is_dir():
        raise UserError(f"{path} names {checkpoint}, which does not exist; rerun train (dvc repro train)")
    return checkpoint


def merged_model(base: str, checkpoint: Path, dtype: str):
    """The checkpoint as a plain transformers model, and the base's tokenizer."""
    model, tokenizer = load_folder(base, dtype=dtype)
    if (checkpoint / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, checkpoint).merge_and_unload()
        print(f"[merge] merged LoRA adapter {checkpoint} into {base}", flush=True)
    else:
        model, _ = load_folder(str(checkpoint), dtype=dtype)
        print(f"[merge] {checkpoint} is a full model; saving it through", flush=True)
    return model, tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description="Merge the selected checkpoint into the base model.")
    ap.add_argument("--base", default="models/base")
    ap.add_argument("--select", default="metrics/select.json")
    ap.add_argument("--out", default="models/merged")
    args = ap.parse_args()
    p = load("merge", MergeParams)

    model, tokenizer = merged_model(args.base, selected_checkpoint(args.select), p.dtype)
    # Generation must stop at the chat template's end of turn, or the model talks on forever.
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    with atomic_dir(args.out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if (Path(args.base) / PIN_FILE).is_file():  # provenance, and the class to load it with
            shutil.copy(Path(args.base) / PIN_FILE, tmp / PIN_FILE)
    print(f"[merge] wrote {args.out}", flush=True)


if __name__ == "__main__":
    run(main)
