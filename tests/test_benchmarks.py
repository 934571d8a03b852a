"""benchmarks: lm-evaluation-harness on a model folder. The stage on the tiny model writes every
task's figure with its standard error, the settings and each item's outcome; the harness's figure
is a recount of its own per-item log-likelihoods; a hub task must be pinned and, offline, fails in
one line naming it; compare pairs the two models by item and refuses different items."""

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, stage_main, tiny_params

from sft.benchmarks import (
    SUITE,
    BenchmarksParams,
    details,
    harness_model,
    loaded_tasks,
    run_harness,
    suite_tasks,
    task_figures,
)
from sft.files import write_jsonl
from sft.pairing import paired_benchmarks
from sft.params import UserError

SHIPPED = ROOT / SUITE
MMLU_PIN = "c30699e8356da336a370243923dbaf21066bb9fe"


def in_copy(folder: Path, monkeypatch, **changes) -> Path:
    """A folder laid out as the repository is for the stage: params.yaml and the shipped suite."""
    params = tiny_params()
    params["benchmarks"] |= changes
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(SHIPPED, folder / SUITE)
    monkeypatch.chdir(folder)
    return folder


def test_the_shipped_suite_is_what_params_name_and_holds_a_few_hundred_items():
    assert set(suite_tasks(SHIPPED)) == {"sft_general", "sft_reading"} == set(BenchmarksParams().tasks)
    rows = [json.loads(line) for name in ("general", "reading") for line in (SHIPPED / f"{name}.jsonl").open()]
    assert len(rows) >= 200 and len({r["id"] for r in rows}) == len(rows)
    for r in rows:  # two different choices, the answer one of them; the right one is not always first
        assert len(set(r["choices"])) == 2 and r["answer"] in (0, 1), r
    assert 0.3 < sum(r["answer"] for r in rows) / len(rows) < 0.7


def test_the_stage_writes_each_tasks_figure_its_error_the_settings_and_each_item(tiny_model_dir, tmp_path,
                                                                               monkeypatch):
    folder = in_copy(tmp_path, monkeypatch, tasks=["sft_general", "sft_reading"], limit=8)
    monkeypatch.setattr("sys.argv", ["benchmarks", "--model", str(tiny_model_dir), "--name", "baseline",
                                     "--suite", SUITE, "--out", "out"])
    stage_main("benchmarks")()
    figures = json.loads((folder / "out" / "baseline.json").read_text())
    assert figures["settings"] == {"harness": "lm-evaluation-harness 0.4.13", "apply_chat_template": False,
                                   "num_fewshot": 0, "limit": 8, "dtype": "float32", "backend": "transformers"}
    rows = [json.loads(line) for line in (folder / "out" / "details" / "baseline.jsonl").open()]
    assert set(figures["tasks"]) == {"sft_general", "sft_reading"}
    for task, f in figures["tasks"].items():
        assert f["samples"] == 8 and f["shots"] == 0 and f["version"] == 1.0
        assert 0.0 <= f["acc"] <= 1.0
        mine = [r["acc"] for r in rows if r["task"] == task]
        assert len(mine) == 8 and set(mine) <= {0.0, 1.0}
        assert f["acc"] == round(sum(mine) / 8, 4)  # the figure is the mean of the items kept
        p = sum(mine) / 8  # the harness's standard error of a mean: the sample standard deviation / sqrt(n)
        assert f["acc_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / 7), abs=1e-4)
    assert not any("loglikelihood" in json.dumps(r) or "resps" in r for r in rows)  # CPU-dependent bits: not kept
    # The same inputs, the same bytes: a second run writes both files identically.
    monkeypatch.setattr("sys.argv", ["benchmarks", "--model", str(tiny_model_dir), "--name", "baseline",
                                     "--suite", SUITE, "--out", "again"])
    stage_main("benchmarks")()
    for name in ("baseline.json", "details/baseline.jsonl"):
        assert (folder / "again" / name).read_bytes() == (folder / "out" / name).read_bytes()


def test_no_task_listed_runs_no_harness_and_writes_empty_figures(tiny_model_dir, tmp_path, monkeypatch):
    folder = in_copy(tmp_path, monkeypatch, tasks=[])
    monkeypatch.setattr("sft.benchmarks.run_harness", lambda *a: pytest.fail("the harness ran"))
    monkeypatch.setattr("sys.argv", ["benchmarks", "--model", str(tiny_model_dir), "--name", "finetuned",
                                     "--suite", SUITE, "--out", "out"])
    stage_main("benchmarks")()
    assert json.loads((folder / "out" / "finetuned.json").read_text())["tasks"] == {}
    assert (folder / "out" / "details" / "finetuned.jsonl").read_text() == ""


def test_the_harness_figure_is_a_recount_of_its_own_per_item_log_likelihoods(tiny_model_dir, tmp_path, monkeypatch):
    in_copy(tmp_path, monkeypatch, limit=12)
    p = BenchmarksParams(tasks=["sft_reading"], limit=12, batch_size=4)
    manager, tasks = loaded_tasks(p, SUITE)
    model, model_args = harness_model(str(tiny_model_dir), "float32", p.batch_size, "transformers")
    results = run_harness(model, model_args, manager, tasks, p)
    samples = results["samples"]["sft_reading"]
    # acc: the choice with the highest log-likelihood is the gold one (lm-evaluation-harness's multiple_choice)
    recount = [float(max(range(len(s["filtered_resps"])), key=lambda i: s["filtered_resps"][i][0]) == s["target"])
               for s in samples]
    assert len(recount) == 12
    assert task_figures(results)["sft_reading"]["acc"] == round(sum(recount) / 12, 4)
    assert [r["acc"] for r in details(results)] == recount


def test_a_hub_task_must_be_pinned_and_offline_fails_in_one_line_naming_it(monkeypatch):
    with pytest.raises(UserError, match=r"benchmarks.tasks mmlu_anatomy read hub data; pin each dataset"):
        loaded_tasks(BenchmarksParams(tasks=["sft_general", "mmlu_anatomy"]), SHIPPED)
    asked = {}
    import datasets

    local = datasets.load_dataset

    def offline(*args, **kwargs):  # datasets as it is with HF_DATASETS_OFFLINE and no cache: local files load
        if kwargs.get("path") == "json":
            return local(*args, **kwargs)
        asked.update(kwargs)
        raise ConnectionError("Couldn't reach 'cais/mmlu' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr("datasets.load_dataset", offline)
    p = BenchmarksParams(tasks=["sft_general", "mmlu_anatomy"], revisions={"mmlu_anatomy": MMLU_PIN})
    with pytest.raises(UserError) as e:
        loaded_tasks(p, SHIPPED)
    said = str(e.value)
    assert "\n" not in said and said.startswith("benchmarks: task mmlu_anatomy could not load (ConnectionError")
    assert "HF_DATASETS_OFFLINE" in said and "drop it from benchmarks.tasks" in said
    # The pin reached the dataset load: the task's own dataset, at the commit params name.
    assert asked.get("path") == "cais/mmlu" and asked.get("name") == "anatomy" and asked.get("revision") == MMLU_PIN


@pytest.mark.parametrize("tasks, revisions, said", [
    (["../../etc/task.yaml"], {}, "is not a task name"),
    (["/abs/path.yaml"], {}, "is not a task name"),
    (["sft_general", "sft_general"], {}, "names sft_general twice"),
    (["mmlu_anatomy"], {"mmlu_anatomy": "main"}, "pin the dataset's 40-hex commit sha"),
    (["sft_general"], {"mmlu_anatomy": MMLU_PIN}, "not in benchmarks.tasks"),
])
def test_task_names_are_names_and_pins_are_commits(tasks, revisions, said):
    # A string the harness takes as a path would load any YAML, and a task YAML may run code.
    with pytest.raises(UserError, match=said):
        BenchmarksParams(tasks=tasks, revisions=revisions)


def items(task: str, outcomes: list[float], hashes: str = "h") -> list[dict]:
    return [{"task": task, "doc_id": i, "doc_hash": f"{hashes}{i}", "acc": v} for i, v in enumerate(outcomes)]


def test_compare_pairs_the_two_models_by_item(tmp_path):
    before, after = tmp_path / "baseline.jsonl", tmp_path / "finetuned.jsonl"
    write_jsonl(before, items("a", [1, 0, 0, 1, 0, 1, 1, 0]) + items("only_before", [1]))
    write_jsonl(after, list(reversed(items("a", [1, 1, 1, 1, 0, 1, 0, 0]))))  # order does not matter: ids do
    paired = paired_benchmarks(before, after)
    assert set(paired) == {"a"}  # a task one model did not run is not paired
    a = paired["a"]["acc"]
    assert (a["baseline"], a["finetuned"], a["items"], a["difference"]) == (0.5, 0.625, 8, 0.125)
    assert (a["improved"], a["regressed"]) == (2, 1) and a["difference_ci_low"] <= 0.125 <= a["difference_ci_high"]


def test_compare_refuses_a_task_run_on_different_items(tmp_path):
    before, after = tmp_path / "baseline.jsonl", tmp_path / "finetuned.jsonl"
    write_jsonl(before, items("a", [1, 0]))
    write_jsonl(after, items("a", [1, 0], hashes="other"))
    with pytest.raises(UserError, match="task a was run on different items"):
        paired_benchmarks(before, after)


def test_the_vllm_backend_asks_the_harness_for_its_vllm_model_with_arguments_it_takes():
    """vllm is not installed here: the harness's VLLM class is read from its source, and the
    arguments are those simple_evaluate merges with its own (batch_size, max_batch_size, device)."""
    import ast
    import importlib.util

    from lm_eval.models import MODEL_MAPPING

    name, model_args = harness_model("models/merged", "bfloat16", 16, "vllm")
    module, cls = MODEL_MAPPING[name].split(":")
    source = Path(importlib.util.find_spec(module).origin).read_text()
    init = next(f for c in ast.walk(ast.parse(source)) if isinstance(c, ast.ClassDef) and c.name == cls
                for f in c.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    takes = {a.arg for a in init.args.args + init.args.kwonlyargs}
    merged_by_simple_evaluate = {"batch_size", "max_batch_size", "device"}
    assert set(model_args) <= takes and not set(model_args) & merged_by_simple_evaluate
    assert merged_by_simple_evaluate - {"device"} <= takes and init.args.kwarg is not None
    assert model_args == {"pretrained": "models/merged", "dtype": "bfloat16"}
