"""The real DVC graph in a copy of the repository, shrunk: the tiny model, a few records, steps."""

import json
import os
import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.slow


def shrink(params: dict, model_dir) -> dict:
    params["base"].update(model_name_or_path=str(model_dir), gguf_file=None, gguf_sha256=None)
    params["prepare"]["max_records"] = {"train": 8, "validation": 4, "test": 6}
    params["train"].update(epochs=2, per_device_train_batch_size=4, per_device_eval_batch_size=4, logging_steps=1)
    params["evaluate"].update(max_new_tokens=8, batch_size=6)
    return params


def edit(repo, change):
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def dvc(repo, *args) -> str:
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def stale(repo) -> set[str]:
    return set(json.loads(dvc(repo, "status", "--json")))


def test_pipeline_runs_reruns_nothing_and_only_what_changed(repo_copy, tiny_model_dir):
    repo = repo_copy
    edit(repo, lambda p: shrink(p, tiny_model_dir))
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qam", "shrink"], cwd=repo, check=True)

    dvc(repo, "repro")
    baseline = json.loads((repo / "metrics" / "baseline.json").read_text())
    finetuned = json.loads((repo / "metrics" / "finetuned.json").read_text())
    for m in (baseline, finetuned):
        assert m["samples"] == 6 and {"execution_accuracy", "exact_match", "execution_error_rate"} <= set(m)
    assert len((repo / "metrics" / "predictions" / "finetuned.jsonl").read_text().splitlines()) == 6
    select = json.loads((repo / "metrics" / "select.json").read_text())
    assert select["checkpoint"].startswith("models/train/checkpoint-") and len(select["candidates"]) == 2
    assert json.loads((repo / "metrics" / "train.json").read_text())["global_step"] == 4
    assert (repo / "models" / "merged" / "model.safetensors").is_file()

    # Nothing changed: nothing runs.
    assert stale(repo) == set()
    assert "Running stage" not in dvc(repo, "repro")

    edit(repo, lambda p: p["train"].update(learning_rate=2e-4))
    assert stale(repo) == {"train"}  # select, merge, evaluate@finetuned follow once train's outputs change
    subprocess.run(["git", "checkout", "params.yaml"], cwd=repo, check=True)

    edit(repo, lambda p: p["evaluate"].update(max_new_tokens=9))
    assert stale(repo) == {"evaluate@baseline", "evaluate@finetuned"}
    subprocess.run(["git", "checkout", "params.yaml"], cwd=repo, check=True)

    # An experiment, its figures beside the workspace's.
    subprocess.run(["git", "add", "dvc.lock"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "lock"], cwd=repo, check=True)
    dvc(repo, "exp", "run", "-S", "train.epochs=1")
    assert json.loads((repo / "metrics" / "train.json").read_text())["global_step"] == 2
    shown = json.loads(dvc(repo, "exp", "show", "--json"))
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    assert exps, shown
    diff = json.loads(dvc(repo, "metrics", "diff", "--json"))
    assert diff["metrics/train.json"]["global_step"] == {"old": 4, "new": 2, "diff": -2}
    assert "execution_accuracy" in dvc(repo, "metrics", "show")
    [plot] = json.loads(dvc(repo, "plots", "show", "--json"))["data"]["loss"]
    points = {(p["filename"], int(p["step"])) for p in plot["content"]["data"]["values"]}
    assert {("eval/loss.tsv", 2), ("train/loss.tsv", 1), ("train/loss.tsv", 2)} <= points  # the 1-epoch experiment
