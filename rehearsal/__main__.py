"""Rehearse a preset on the CPU: every stage of the graph, with the preset's own params, templates,
task metric, training method and model class, on a tiny random model of the preset's real
architecture and stand-in records of its dataset's shape. What a user runs before renting a GPU;
it first prints what the real run will need: GPU memory at the preset's batch and length, and
disk (rehearsal/estimate.py, from the real model's architecture in rehearsal/configs/).

    make rehearse NAME=headnotes        (python -m rehearsal headnotes)

It works in a throwaway copy of the repository (the working tree is left as it is). These things
are swapped, nothing else: `base.model_name_or_path` (a tiny Gemma 3 of the preset's model class,
rehearsal/gemma.py), `prepare.dataset` (stand-in records from prompts/<dataset>/standin.yaml,
rehearsal/standin.py), the hub revisions (nothing to pin offline) and the benchmark tasks that read
hub data (the shipped suite's tasks stand in for them, a few items each); a preset's judges (a
hub model) are the tiny base model itself, on a few test items; and replies are cut at 64 new
tokens (a tiny random model never stops by itself). Settings that need a GPU
fall back with one line each, as on any CPU. It prints what ran and ends with one summary line;
the exit status is that of `dvc repro` (every stage, export included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from rehearsal import estimate, gemma, standin
from rehearsal.workspace import ROOT, commit, copy_repository
from sft.benchmarks import SUITE, suite_tasks
from sft.params import read_yaml

FAMILIES = {"gemma-3": gemma}  # model families a tiny stand-in can be built for
NEW_TOKENS = 64  # the most new tokens a rehearsal generates a reply


def family(model: str):
    for marker, module in FAMILIES.items():
        if marker in model.lower():
            return module
    raise SystemExit(f"rehearse: no tiny stand-in for '{model}' yet (known families: {sorted(FAMILIES)})")


def rehearsal_params(preset: dict, model_dir: Path, dataset: str) -> dict:
    params = json.loads(json.dumps(preset))  # a deep copy
    params["base"].update(model_name_or_path=str(model_dir), revision=None, gguf_file=None, gguf_sha256=None)
    params["prepare"].update(dataset=dataset, revision=None)
    if "benchmarks" in params:  # hub tasks cannot load offline: the shipped suite runs the same stage
        shipped = [t for t in params["benchmarks"]["tasks"] if t in suite_tasks(ROOT / SUITE)] or list(suite_tasks(ROOT / SUITE))
        params["benchmarks"].update(tasks=shipped, revisions={}, limit=8)
    # A tiny random model never stops: it would write every token a preset allows (1024 for medqa's
    # chain of thought), which is minutes of decoding that tell nothing about the path.
    for section, key in (("select", "max_new_tokens"), ("evaluate", "max_new_tokens"), ("export", "test_max_new_tokens")):
        if key in params.get(section, {}):
            params[section][key] = min(params[section][key], NEW_TOKENS)
    judge = params.get("judge", {})
    if judge.get("hub") or judge.get("folders"):  # the tiny base model judges in place of the preset's judges
        judge.update(hub={}, folders={"tiny": "models/base"}, max_items=4, max_new_tokens=16, dtype="float32")
    return params


def write_records(folder: Path, records: dict[str, list[dict]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in records.items():
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def read(repo: Path, name: str) -> dict:
    path = repo / "metrics" / name
    return json.loads(path.read_text()) if path.is_file() else {}


def summary(name: str, repo: Path, params: dict, seconds: float) -> str:
    train, compare = read(repo, "train.json"), read(repo, "compare.json")
    merge, prepare, export = read(repo, "merge.json"), read(repo, "prepare.json"), read(repo, "export.json")
    forgetting, fewshot = read(repo, "forgetting.json"), compare.get("against_fewshot", {})
    judged = read(repo, "judge/tiny.json")
    judge = "no judge" if not judged else (f"judge win rate {judged.get('win_rate')} [{judged.get('win_rate_ci_low')}, {judged.get('win_rate_ci_high')}]"
             f" ({judged.get('judged')} of {judged.get('items')} pairs judged in both orders, {judged.get('no_verdict')} "
             "without a verdict: a tiny random judge's words)"
             if judged.get("mode") == "pairwise" else f"judge scores {judged.get('baseline_score')} -> "
             f"{judged.get('finetuned_score')}")
    bench = {t: f["acc"]["finetuned"] for t, f in compare.get("benchmarks", {}).items() if "acc" in f}
    pin = json.loads((repo / "models" / "base" / "pin.json").read_text())
    config = json.loads((repo / "models" / "base" / "config.json").read_text())
    return (f"rehearse {name}: passed in {seconds:.0f} s: {config['architectures'][0]} ({pin['parameters']:,} "
            f"parameters) via {params['base']['model_class']}, method {params['train']['method']}, "
            f"{prepare.get('records')} records (too long dropped {prepare.get('dropped_too_long')}), "
            f"{train.get('global_step')} steps, eval loss {train.get('eval_loss')}, merge parity "
            f"{merge.get('greedy_agreement')} against {merge.get('parity_reference', 'the adapter on the base')}, "
            f"{compare.get('metric')} {compare.get('baseline')} ({fewshot.get('fewshot')} few-shot) -> "
            f"{compare.get('finetuned')}, general-text loss change {forgetting.get('difference')}, benchmarks {bench}, "
            f"{judge}, GGUF "
            f"{params['export']['outtype']} parity {export.get('greedy_agreement')} (prompt ids as trained: "
            f"{export.get('same_prompt_token_ids')}/{export.get('parity_prompts')})")


def main() -> None:
    ap = argparse.ArgumentParser(description="Rehearse a preset on the CPU with a tiny model of its architecture.")
    ap.add_argument("name", help="a preset: " + ", ".join(sorted(p.stem for p in (ROOT / "presets").glob("*.yaml"))))
    ap.add_argument("--keep", action="store_true", help="keep the throwaway copy and print where it is")
    ap.add_argument("--workdir", type=Path, help="work (and keep everything) here instead of a temporary folder")
    ap.add_argument("--seed", type=int, default=0, help="of the stand-in records and the tiny model's weights")
    args = ap.parse_args()
    presets = sorted(p.stem for p in (ROOT / "presets").glob("*.yaml"))
    if args.name not in presets:  # a name, never a path: ../presets/x would pass a file test
        raise SystemExit(f"rehearse: NAME must be one of: {' '.join(presets)}")
    preset_path = ROOT / "presets" / f"{args.name}.yaml"
    preset = read_yaml(preset_path)
    builder = family(preset["base"]["model_name_or_path"])
    if (needs := estimate.before_renting(preset)) is not None:
        print(needs, flush=True)
    records = standin.records(standin.load_spec(ROOT / preset["prepare"]["prompts"]), args.seed)

    tmp = args.workdir or Path(tempfile.mkdtemp(prefix=f"rehearse-{args.name}-"))
    keep = args.keep or args.workdir is not None
    started = time.time()
    repo = copy_repository(tmp / "repo")
    subset = preset["prepare"].get("subset")
    write_records(repo / "data" / "raw" / "standin" / (subset or ""), records)
    model_dir = builder.build(tmp / "standin-model", preset["base"]["model_class"], standin.texts(records),
                              seed=args.seed)
    params = rehearsal_params(preset, model_dir, "data/raw/standin")
    (repo / "params.yaml").write_text(f"# presets/{args.name}.yaml for a rehearsal (python -m rehearsal)\n"
                                      + yaml.safe_dump(params, sort_keys=False))
    commit(repo, f"rehearse {args.name}")
    print(f"[rehearse] {args.name}: {sum(map(len, records.values()))} stand-in records, tiny "
          f"{preset['base']['model_class']} of {preset['base']['model_name_or_path']}'s family, in {repo}",
          flush=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    # The whole graph, export included: the stand-in's tokenizer.model is SentencePiece, as Gemma's
    # is, so llama.cpp's converter takes the path it takes for the preset's real model.
    done = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env)
    if done.returncode != 0:
        print(f"rehearse {args.name}: FAILED (dvc repro exit status {done.returncode}); the copy is kept at "
              f"{repo}", flush=True)
        sys.exit(done.returncode)
    print(summary(args.name, repo, params, time.time() - started), flush=True)
    if keep:
        print(f"[rehearse] kept {tmp}", flush=True)
    else:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
