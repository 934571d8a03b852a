"""card: the model card of each form the model is published in, from the run's outputs.

    python -m stages.card --form merged --figures metrics/merge.json --out models/card/merged
    python -m stages.card --form gguf --figures metrics/export.json --out models/card/gguf

Reads `card:` of params.yaml (the card's base_model, license and title) and the run's outputs:
what train decided (models/trained.json), the figures of the fine-tuned model and of every
baseline compare paired with it (metrics/compare.json names them; metrics/<name>.json), the other
models (metrics/others/<name>.json, each already paired with the fine-tuned model), forgetting's
figures, the standard benchmarks' (metrics/benchmarks/<name>.json, paired in compare.json), the
loss curves, the merged model's chat template and stops, and the parity check of the
form described (metrics/merge.json for models/merged; metrics/export.json for the GGUF, when
export ran: without llama.cpp the merged model's card is still written). The sources prepare,
fewshot and forgetting were given, and which other models and judges are current, are read from their
sections of params.yaml: their outputs do not record them (tests/test_layout.py lists why).

Writes <out>/README.md and <out>/loss.png: copy them beside the model to publish it (`hf upload
org/name models/merged` and then `models/card/merged`; the GGUF's own repository takes models/gguf
and `models/card/gguf`). The card is a stage of its own so that an edit to its wording, or one
more other model, rewrites the card and reconverts nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

from sft import trained
from sft.card import FORMS, CardParams, RunFacts, model_card, pairings
from sft.fewshot import FewShotParams
from sft.files import atomic_dir, read_jsonl
from sft.forgetting import ForgettingParams
from sft.judging import JudgeParams
from sft.modelfile import stop_strings
from sft.models import PIN_FILE, load_tokenizer
from sft.others import OthersParams
from sft.params import UserError, load, run
from sft.plots import loss_png
from sft.preparation import PrepareParams

FIGURES = ("finetuned", "forgetting")  # metrics/<name>.json beside compare's baselines


def read_figures(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path} is missing; run the stage that writes it first (dvc repro {path.stem})")
    return json.loads(path.read_text(encoding="utf-8"))


def other_models(metrics: Path, others: OthersParams) -> list[dict]:
    """The other models' figures as their stages wrote them (already paired with the fine-tuned
    model), for those others: names now: a removed one's file may still be on disk."""
    return [{"name": name, **read_figures(metrics / "others" / f"{name}.json")}
            for name in [*others.hub, *others.folders]]


def judges(metrics: Path, p: JudgeParams) -> list[dict]:
    """The judges' figures as their stages wrote them, for those judge: names now."""
    return [{"name": name, **read_figures(metrics / "judge" / f"{name}.json")} for name in [*p.hub, *p.folders]]


def sources(p: PrepareParams) -> list[dict]:
    """The datasets the run was prepared from: a mixture's sources, or the one dataset."""
    if p.datasets:
        return [{k: s.get(k) for k in ("dataset", "subset", "revision")} for s in p.datasets]
    return [{"dataset": p.dataset, "subset": p.subset, "revision": p.revision}]


def prompt_and_stops(model: Path, data: Path) -> tuple[str, list[str]]:
    """The first validation prompt as the merged model sees it, and the tokens it stops at."""
    from transformers import GenerationConfig

    tokenizer = load_tokenizer(str(model))
    # As generation renders it (sft/generation.py: render_prompts), without running its code.
    prompt = tokenizer.apply_chat_template(read_jsonl(data / "validation.jsonl")[0]["prompt"], tokenize=False,
                                           add_generation_prompt=True)
    stops = stop_strings(SimpleNamespace(generation_config=GenerationConfig.from_pretrained(model)), tokenizer)
    return prompt, stops


def main() -> None:
    ap = argparse.ArgumentParser(description="Write the model card of one form of the model.")
    ap.add_argument("--form", required=True, choices=FORMS)
    ap.add_argument("--figures", required=True, help="the form's parity figures: metrics/merge.json or "
                    "metrics/export.json")
    ap.add_argument("--trained", default="models/trained.json")
    ap.add_argument("--base", default="models/base", help="its pin.json names the base when card.base_model is null")
    ap.add_argument("--model", default="models/merged", help="its chat template and stops")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--metrics", default="metrics")
    ap.add_argument("--loss", default="metrics/train/plots/metrics", help="DVCLive's loss curves, drawn in the card")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    p = load("card", CardParams)
    # The sources the run was given and which other models are current: no output records them.
    prepare, shots = load("prepare", PrepareParams, announce=False), load("fewshot", FewShotParams, announce=False).shots
    forgetting = load("forgetting", ForgettingParams, announce=False).dataset
    others = load("others", OthersParams, announce=False)
    judge = load("judge", JudgeParams, announce=False)

    metrics = Path(args.metrics)
    compare = read_figures(metrics / "compare.json")
    names = [name for name, _ in pairings(compare)]
    figures = {name: read_figures(metrics / f"{name}.json") for name in [*names, *FIGURES]}
    base_model = p.base_model or str(read_figures(Path(args.base) / PIN_FILE)["model_name_or_path"])
    prompt, stops = prompt_and_stops(Path(args.model), Path(args.data))
    facts = RunFacts(base_model=base_model, license=p.license, datasets=sources(prepare),
                     trained=trained.read(args.trained), compare=compare, figures=figures, shots=shots,
                     forgetting=figures["forgetting"], forgetting_dataset=forgetting, prompt_example=prompt, stops=stops,
                     form=args.form, checked=read_figures(Path(args.figures)), others=other_models(metrics, others),
                     benchmarks={name: read_figures(metrics / "benchmarks" / f"{name}.json")
                                 for name in ("baseline", "finetuned")}, judges=judges(metrics, judge))
    card = str(model_card(facts, p.model_name))
    with atomic_dir(args.out) as tmp:
        if not loss_png(Path(args.loss), tmp / "loss.png"):
            card = card.replace("\n![training and validation loss](loss.png)\n", "\n")
        (tmp / "README.md").write_text(card, encoding="utf-8")
    print(f"[card] wrote {args.out}/README.md: the {args.form} model's card", flush=True)


if __name__ == "__main__":
    run(main)
