"""The real DVC graph on the tiny configuration, in a copy of the repository: it runs, reruns
nothing when nothing changed and only what depends on a change, and runs experiments."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, dvc, edit, run_copy, stale

pytestmark = pytest.mark.slow


def test_pipeline_runs_reruns_nothing_and_only_what_changed(tiny_run, tmp_path):
    repo = run_copy(tiny_run, tmp_path / "repo")  # `dvc repro` of the whole graph, export included
    baseline = json.loads((repo / "metrics" / "baseline.json").read_text())
    finetuned = json.loads((repo / "metrics" / "finetuned.json").read_text())
    for m in (baseline, finetuned):
        assert m["samples"] == 6 and {"execution_accuracy", "exact_match", "execution_error_rate"} <= set(m)
        assert "tokens_per_second" not in m  # speed varies by machine: metrics/speed/, not the hashed figures
    assert json.loads((repo / "metrics" / "speed" / "finetuned.json").read_text())["tokens_per_second"] > 0
    assert len((repo / "metrics" / "predictions" / "finetuned.jsonl").read_text().splitlines()) == 6
    select = json.loads((repo / "metrics" / "select.json").read_text())
    assert select["checkpoint"].startswith("models/train/checkpoint-") and len(select["candidates"]) == 2
    assert json.loads((repo / "metrics" / "train.json").read_text())["global_step"] == 4
    assert (repo / "models" / "merged" / "model.safetensors").is_file()
    exported = json.loads((repo / "metrics" / "export.json").read_text())
    assert exported["same_prompt_token_ids"] == exported["parity_prompts"] == 4, exported
    assert {p.name for p in (repo / "models" / "gguf").iterdir()} == {"model-f16.gguf", "Modelfile"}
    assert {p.name for p in (repo / "models" / "card" / "gguf").iterdir()} == {"README.md", "loss.png"}
    card = (repo / "models" / "card" / "gguf" / "README.md").read_text()
    merged_card = (repo / "models" / "card" / "merged" / "README.md").read_text()
    # The same card but for the form: the GGUF's names its file and how llama.cpp and Ollama run it.
    assert "llama-cli -m models/gguf/model-f16.gguf" in card and "llama-cli" not in merged_card
    assert card.split("## Training")[1].split("## Use")[0] == merged_card.split("## Training")[1].split("## Use")[0]
    fewshot = json.loads((repo / "metrics" / "fewshot.json").read_text())
    assert fewshot["samples"] == 6 and f"| baseline, 2-shot (train examples before each prompt) | {fewshot['execution_accuracy']:.3f}" in card
    forgetting = json.loads((repo / "metrics" / "forgetting.json").read_text())
    assert forgetting["documents"] == 8 and forgetting["base_loss"] > 0
    assert f"{forgetting['base_loss']:.3f} -> {forgetting['finetuned_loss']:.3f} nats a token" in card
    compare = json.loads((repo / "metrics" / "compare.json").read_text())
    assert compare["against_fewshot"]["fewshot"] == fewshot["execution_accuracy"]
    # The tiny configuration lists no benchmark task (the harness's start, ~8 s a stage, in every test
    # that runs the graph): no figures, no table; the suite runs below.
    assert json.loads((repo / "metrics" / "benchmarks" / "finetuned.json").read_text())["tasks"] == {}
    assert compare["benchmarks"] == {} and "Standard benchmarks" not in card

    # make plots: a page that loads nothing from the network, and PNGs.
    subprocess.run([sys.executable, "-m", "apps.plots", "--out", "dvc_plots"], cwd=repo, check=True,
                   env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    page = (repo / "dvc_plots" / "index.html").read_text()
    assert "<script src" not in page and "cdn.jsdelivr" not in page and "vegaEmbed" in page
    assert (repo / "dvc_plots" / "loss.png").read_bytes()[:4] == b"\x89PNG"

    # Nothing changed: nothing runs.
    assert stale(repo) == set()
    assert "Running stage" not in dvc(repo, "repro")

    edit(repo, lambda p: p["train"].update(learning_rate=2e-4))
    # Only train reads train:; select, merge, the evaluations and the cards follow once its outputs
    # change (the cards read what train decided: models/trained.json).
    assert stale(repo) == {"train"}
    subprocess.run(["git", "checkout", "params.yaml"], cwd=repo, check=True)

    edit(repo, lambda p: p["evaluate"].update(max_new_tokens=9))
    assert stale(repo) == {"evaluate@baseline", "evaluate@finetuned", "fewshot"}
    subprocess.run(["git", "checkout", "params.yaml"], cwd=repo, check=True)

    # The few-shot baseline and the general-text loss: each reruns alone (and the card that prints it).
    edit(repo, lambda p: p["fewshot"].update(shots=1))
    assert stale(repo) == {"fewshot", "card@merged", "card@gguf"}
    subprocess.run(["git", "checkout", "params.yaml"], cwd=repo, check=True)
    edit(repo, lambda p: p["forgetting"].update(max_documents=4))
    assert stale(repo) == {"forgetting"}
    subprocess.run(["git", "checkout", "params.yaml"], cwd=repo, check=True)

    # Files no stage reads change nothing: the data generator, the README, an app, a benchmark.
    untouched = ("data/generate_sql.py", "data/generate_general.py", "data/generate_benchmarks.py", "README.md", "apps/chat.py", "bench/train.py")
    for name in untouched:
        with open(repo / name, "a") as f:
            f.write("\n# edited\n")
    assert stale(repo) == set()
    subprocess.run(["git", "checkout", "--", *untouched], cwd=repo, check=True)

    # The card's wording edited: the cards are written again, nothing is converted again.
    with open(repo / "sft" / "card.py", "a") as f:
        f.write("\n# the card's wording edited\n")
    assert stale(repo) == {"card@merged", "card@gguf"}
    subprocess.run(["git", "checkout", "--", "sft/card.py"], cwd=repo, check=True)

    # Only the audit's code edited (sft/tokens.py, which train does not run: prepare hands it the
    # tokens): prepare reruns, writes the same tokens, and nothing after it runs.
    with open(repo / "sft" / "tokens.py", "a") as f:
        f.write("\n# the audit's wording edited\n")
    assert stale(repo) == {"prepare"}
    ran = dvc(repo, "repro")
    assert "Running stage 'prepare'" in ran and ran.count("Running stage") == 1, ran
    subprocess.run(["git", "checkout", "--", "sft/tokens.py"], cwd=repo, check=True)
    assert "Running stage" not in dvc(repo, "repro")  # the first prepare, from the run-cache
    assert stale(repo) == set()

    # The shipped benchmark suite listed: the benchmarks of both models are stale, nothing else (their
    # run through DVC, compare's pairing and the card's table: every preset's rehearsal, test_rehearsal).
    edit(repo, lambda p: p["benchmarks"].update(tasks=["sft_general", "sft_reading"]))
    assert stale(repo) == {"benchmarks@baseline", "benchmarks@finetuned"}
    subprocess.run(["git", "checkout", "params.yaml"], cwd=repo, check=True)
    # An experiment beside the workspace (exp show, metrics diff, plots): tests/test_experiments.py.


def test_a_mixture_with_a_declared_answer_and_multi_turn_records_runs_end_to_end(tiny_run, tmp_path):
    """Two sources through the whole graph from data, prompts and params alone (no Python):
    single-turn arithmetic word problems (templates) and multi-turn ones (messages), whose answers
    end '#### N'; every assistant turn trained, both scored with the metric prompts/arithmetic/task.yaml
    declares. In a copy of the tiny run: the base model is kept, every stage from prepare on reruns."""
    repo = run_copy(tiny_run, tmp_path / "repo")

    def mixture(p):
        p["prepare"].update(prompts="prompts/arithmetic", datasets=[
            {"dataset": "data/raw/arithmetic", "weight": 0.5},
            {"dataset": "data/raw/arithmetic-chat", "prompts": "prompts/arithmetic-chat", "weight": 0.5}])

    edit(repo, mixture)
    said = dvc(repo, "repro", "compare")  # export is checked by the first test
    assert "Running stage 'prepare'" in said and "Running stage 'train'" in said and "Running stage 'base'" not in said
    prepared = json.loads((repo / "metrics" / "prepare.json").read_text())
    assert set(prepared["sources"]) == {"arithmetic", "arithmetic-chat"}
    assert sum(s["records"]["train"] for s in prepared["sources"].values()) == prepared["records"]["train"] == 8
    train = [json.loads(line) for line in (repo / "data" / "prepared" / "train.jsonl").open()]
    multi = [r for r in train if sum(t["role"] == "assistant" for t in r["prompt"])]
    assert multi, "the seeded subset holds multi-turn records"
    audit = (repo / "data" / "prepared" / "audit.md").read_text()
    answers = [sum(t["role"] == "assistant" for t in r["prompt"] + r["completion"]) for r in train[:3]]
    assert [part.count("⟦") for part in audit.split("## train record")[1:]] == answers  # every answer a span
    assert json.loads((repo / "metrics" / "train.json").read_text())["global_step"] > 0
    task = json.loads((repo / "data" / "prepared" / "task.json").read_text())
    assert task["metric"] == "answer_match" and task["settings"]["answer"]["compare"] == "numeric"
    for name in ("baseline", "finetuned"):
        m = json.loads((repo / "metrics" / f"{name}.json").read_text())
        assert m["samples"] == 6 and {"accuracy", "accuracy_ci_low", "accuracy_ci_high", "unparseable_rate"} <= set(m)
        rows = [json.loads(line) for line in (repo / "metrics" / "predictions" / f"{name}.jsonl").open()]
        assert all(r["expected"] and r["gold"].endswith(f"#### {r['expected']}") for r in rows)
    compare = json.loads((repo / "metrics" / "compare.json").read_text())
    assert compare["metric"] == "accuracy" and "mcnemar_p" in compare


def test_no_token_in_the_environment_reaches_an_output_the_cache_the_lock_or_the_log(tiny_run):
    """The run had HF_TOKEN and WANDB_API_KEY set: neither is in any file it wrote (checkpoints'
    training_args.bin, the model card, dvc.lock, the DVC cache) nor in its log."""
    from conftest import PLANTED_SECRETS

    planted = [value.encode() for value in PLANTED_SECRETS.values()]
    log = (tiny_run.parent / "repro.log").read_bytes()
    assert b"[train] params" in log and b"[export] wrote" in log
    def git_files(*args) -> set[str]:
        return set(subprocess.run(["git", *args], cwd=tiny_run, capture_output=True, text=True,
                                  check=True).stdout.splitlines())

    # The repository's own files as committed (conftest.py names the planted values); dvc.lock and
    # every file the run wrote are read.
    committed = git_files("ls-files") - git_files("diff", "--name-only", "HEAD")
    assert "dvc.lock" not in committed
    files = [p for p in tiny_run.rglob("*") if p.is_file() and p.relative_to(tiny_run).parts[0] != ".git"
             and str(p.relative_to(tiny_run)) not in committed]
    assert any(p.name == "training_args.bin" for p in files) and (tiny_run / "models/card/gguf/README.md").is_file()
    assert [str(p) for p in files if any(secret in p.read_bytes() for secret in planted)] == []
    assert not any(secret in log for secret in planted)


def test_the_floor_of_a_finished_run_against_what_it_recorded(tiny_run, tmp_path):
    """bench/floor.py on the finished tiny run: every counted stage, the seconds it recorded, and
    the training count from prepare's files (tests/test_floor.py checks the arithmetic)."""
    from types import SimpleNamespace

    import yaml

    sys.path.insert(0, str(ROOT / "bench"))
    import floor

    repo = run_copy(tiny_run, tmp_path / "repo")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "floor.py"), "--repo", str(repo), "--seconds", "90",
                           "--tokens", "64"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((repo / "bench" / "results" / "floor.json").read_text())
    stages = result["stages"]
    assert set(stages) == {"train (with validation)", "baseline", "finetuned", "fewshot", "forgetting (two models)"}
    speed = {name: json.loads((repo / "metrics" / "speed" / f"{name}.json").read_text())
             for name in ("train", "baseline", "finetuned", "fewshot")}
    assert stages["train (with validation)"]["recorded_seconds"] == speed["train"]["train_seconds"]
    assert stages["fewshot"]["recorded_seconds"] == speed["fewshot"]["generation_seconds"]
    assert stages["forgetting (two models)"]["recorded_seconds"] is None  # the stage records no speed
    # The training count from prepare's files: every token through forward, backward (LoRA) and
    # the recompute of activation checkpointing (on in the tiny configuration), two epochs, and a
    # validation pass after each.
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["gradient_checkpointing"] is True
    config = SimpleNamespace(**json.loads((repo / "models" / "base" / "config.json").read_text()))

    def forward(split):
        rows = (repo / "data" / "prepared" / f"{split}.tokens.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in rows]
        return floor.forward_flops(config, [len(r["input_ids"]) for r in records],
                                   sum(sum(r["assistant_masks"]) for r in records))

    expected = 2 * 3 * forward("train") + 2 * forward("validation")
    assert stages["train (with validation)"]["tflop"] * 1e12 == pytest.approx(expected, rel=1e-3)
    total = sum(s["tflop"] for s in stages.values())
    assert result["total_tflop"] == pytest.approx(total, rel=1e-3)
    assert result["floor_seconds"]["float32"] == pytest.approx(
        result["total_tflop"] * 1e12 / (result["limit_gflops"]["float32"] * 1e9), rel=0.01)
    assert result["run_share_of_limit"] == pytest.approx(result["floor_seconds"]["float32"] / 90, rel=2e-3)
    assert "in all:" in done.stdout and "the run took 90 s" in done.stdout
