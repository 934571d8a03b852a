"""Other models as baselines (others: of params.yaml): a model folder, and a hub model pinned by a
commit read from the Hugging Face cache offline, each evaluated as evaluate does and paired with the
fine-tuned model on the same items; one that cannot load fails alone, in one line, and the rest of
the graph runs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, dvc, edit, multiple_choice_data, run_copy, stage_main, stale

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_params(run: Path, others: dict) -> None:
    (run / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"max_new_tokens": 3, "batch_size": 4},
                                                     "others": {"hub": {}, "folders": {}, **others}}))


def read(path: Path):
    return json.loads(path.read_text()) if path.suffix == ".json" else [json.loads(x) for x in path.open()]


def test_a_model_folder_is_evaluated_and_paired_with_the_fine_tuned_model(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = multiple_choice_data(tmp_path / "data")
    write_params(tmp_path, {"folders": {"earlier": str(tiny_model_dir)}})
    # The fine-tuned model's predictions: here the same model, evaluated by the evaluate stage.
    monkeypatch.setattr("sys.argv", ["evaluate", "--model", str(tiny_model_dir), "--name", "finetuned",
                                     "--data", str(data), "--out", "metrics"])
    stage_main("evaluate")()
    monkeypatch.setattr("sys.argv", ["other_folder", "--name", "earlier", "--data", str(data), "--out", "metrics"])
    stage_main("other_folder")()

    metrics = tmp_path / "metrics"
    figures = read(metrics / "others" / "earlier.json")
    # The same model with the same settings: the same replies, the same figures, nothing flipped.
    assert [r["prediction"] for r in read(metrics / "predictions" / "others" / "earlier.jsonl")] == \
        [r["prediction"] for r in read(metrics / "predictions" / "finetuned.jsonl")]
    assert {k: v for k, v in figures.items() if k not in ("model", "against_finetuned")} == \
        read(metrics / "finetuned.json")
    assert figures["model"] == str(tiny_model_dir)
    assert figures["against_finetuned"] == {"finetuned": figures["accuracy"], "difference": 0.0,
                                            "difference_ci_low": 0.0, "difference_ci_high": 0.0, "improved": 0,
                                            "regressed": 0, "mcnemar_p": 1.0}
    assert (metrics / "confusion" / "others" / "earlier.json").is_file()

    # A fine-tuned model right on items 0 and 1 (the random model answers none): +0.5, two improved.
    finetuned = read(metrics / "predictions" / "finetuned.jsonl")
    for r in finetuned[:2]:
        r["accuracy"] = 1.0
    (metrics / "predictions" / "finetuned.jsonl").write_text("".join(json.dumps(r) + "\n" for r in finetuned))
    stage_main("other_folder")()  # its replies are read back, kept by the first run
    against = read(metrics / "others" / "earlier.json")["against_finetuned"]
    assert (against["finetuned"], against["difference"], against["improved"], against["regressed"]) == \
        (0.5, 0.5, 2, 0)


def run_stage(module: str, name: str, run: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, "--name", name, "--data", "data", "--out", "metrics"],
                          cwd=run, env=env, capture_output=True, text=True, timeout=600)


def test_a_hub_model_pinned_by_a_commit_loads_offline_from_the_cache_and_one_that_cannot_fails_in_one_line(
        tiny_model_dir, tmp_path):
    multiple_choice_data(tmp_path / "data")
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny" / "snapshots" / COMMIT  # the cache's layout, as hf download leaves it
    shutil.copytree(tiny_model_dir, snapshot)
    absent = "f" * 40
    write_params(tmp_path, {"hub": {"tiny": {"model_name_or_path": "someone/tiny", "revision": COMMIT},
                                    "gone": {"model_name_or_path": "someone/tiny", "revision": absent}}})
    (tmp_path / "metrics" / "predictions").mkdir(parents=True)
    (tmp_path / "metrics" / "predictions" / "finetuned.jsonl").write_text(
        "".join(json.dumps({"id": i, "accuracy": float(i < 3)}) + "\n" for i in range(4)))

    done = run_stage("stages.other_hub", "tiny", tmp_path, cache)
    assert done.returncode == 0, done.stderr
    figures = read(tmp_path / "metrics" / "others" / "tiny.json")
    assert (figures["model"], figures["revision"], figures["samples"]) == ("someone/tiny", COMMIT, 4)
    assert figures["against_finetuned"]["finetuned"] == 0.75
    assert figures["against_finetuned"]["difference"] == round(0.75 - figures["accuracy"], 4)

    done = run_stage("stages.other_hub", "gone", tmp_path, cache)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: params.yaml: others.hub.gone: cannot load someone/tiny at {absent}")
    assert f"hf download someone/tiny --revision {absent}" in done.stderr
    assert not (tmp_path / "metrics" / "others" / "gone.json").exists()


@pytest.mark.slow
def test_in_the_graph_a_model_that_cannot_load_stops_only_the_card_and_the_card_lists_the_others(tiny_run, tmp_path):
    repo = run_copy(tiny_run, tmp_path / "repo")
    compare = read(repo / "metrics" / "compare.json")
    # The base model again, as a folder: its row must pair exactly as compare's baseline does.
    edit(repo, lambda p: p["others"].update(
        folders={"again": "models/base"},
        hub={"gone": {"model_name_or_path": "nobody/absent", "revision": "e" * 40}}))
    # Only the new models' stages and the cards that list them: compare and export never read them.
    assert stale(repo) == {"other_folder@again", "other_hub@gone", "card@merged", "card@gguf"}

    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "dvc", "repro", "--keep-going"], cwd=repo, env=env,
                          capture_output=True, text=True)
    assert done.returncode != 0
    log = done.stdout + done.stderr
    assert "error: params.yaml: others.hub.gone: cannot load nobody/absent" in log
    assert "Running stage 'other_folder@again'" in log and "Running stage 'card@merged'" not in log
    # nothing else ran again, nothing else is stale
    assert stale(repo) == {"other_hub@gone", "card@merged", "card@gguf"}
    again = read(repo / "metrics" / "others" / "again.json")
    assert again["against_finetuned"] == {"finetuned": compare["finetuned"],
                                          **{k: v for k, v in compare.items() if k.startswith(
                                              ("difference", "improved", "regressed", "mcnemar"))}}

    edit(repo, lambda p: p["others"].update(hub={}))
    ran = dvc(repo, "repro")
    assert "Running stage 'card@merged'" in ran and ran.count("Running stage") == 2, ran
    card = (repo / "models" / "card" / "merged" / "README.md").read_text()
    metric = compare["metric"]
    row = next(line for line in card.splitlines() if line.startswith("| again ("))
    assert row.startswith(f"| again (`models/base`) | {again[metric]:.3f} [") and \
        f"| {compare['difference']:+.3f} [" in row
    assert "metrics/others/again.json" in dvc(repo, "metrics", "show")
