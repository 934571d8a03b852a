import json
import os

import pytest
from conftest import ROOT

from stages import prepare
from stages.params import UserError
from stages.prepare import PrepareParams, render, split_records, without_overlap
from stages.prompts import load_task, load_templates

RECORD = {"sql_prompt": "How many items?", "sql_context": "CREATE TABLE t (id INT);", "sql": "SELECT COUNT(*) FROM t;"}


def test_sql_templates_render_prompt_completion():
    templates = load_templates(ROOT / "prompts" / "sql")
    [row] = render([RECORD], "train", templates, ["sql_context"], "data.jsonl")
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert "How many items?" in row["prompt"][1]["content"] and "CREATE TABLE t" in row["prompt"][1]["content"]
    assert row["completion"] == [{"role": "assistant", "content": "SELECT COUNT(*) FROM t;"}]
    assert row["references"] == {"sql_context": "CREATE TABLE t (id INT);"}
    assert load_task(ROOT / "prompts" / "sql").metric == "sql_execution"


def test_missing_template_variable_names_the_record_and_field():
    templates = load_templates(ROOT / "prompts" / "sql")
    bad = {k: v for k, v in RECORD.items() if k != "sql_prompt"}
    with pytest.raises(UserError, match=r"data.jsonl \[train\] record 2: .*user.jinja: 'sql_prompt' is undefined"):
        render([RECORD, bad], "train", templates, [], "data.jsonl")


def test_empty_completion_is_an_error():
    templates = load_templates(ROOT / "prompts" / "sql")
    with pytest.raises(UserError, match="record 1: the completion .* is empty"):
        render([{**RECORD, "sql": "  "}], "test", templates, [], "data.jsonl")


def test_only_train_is_split_with_the_seed():
    raw = {"train": [{"i": i} for i in range(100)]}
    a = split_records(raw, PrepareParams(seed=1, split_fractions={"validation": 0.1, "test": 0.2}))
    b = split_records(raw, PrepareParams(seed=1, split_fractions={"validation": 0.1, "test": 0.2}))
    assert a == b and {k: len(v) for k, v in a.items()} == {"train": 70, "validation": 10, "test": 20}
    assert sorted(r["i"] for rows in a.values() for r in rows) == list(range(100))


def test_missing_validation_is_cut_from_train_the_size_of_test():
    raw = {"train": [{"i": i} for i in range(50)], "test": [{"i": -i} for i in range(8)]}
    splits = split_records(raw, PrepareParams())
    assert len(splits["validation"]) == 8 and len(splits["train"]) == 42


def test_prompts_seen_in_test_are_dropped_from_train_and_validation():
    row = lambda q: {"prompt": [{"role": "user", "content": q}]}  # noqa: E731
    rows, dropped = without_overlap({"train": [row("a"), row("b"), row("c")], "validation": [row("b"), row("d")],
                                     "test": [row("a")]})
    assert dropped == 2 and [r["prompt"][0]["content"] for r in rows["train"]] == ["c"]


def test_main_writes_the_splits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(
        f"prepare:\n  dataset: {ROOT / 'data' / 'sql'}\n  prompts: {ROOT / 'prompts' / 'sql'}\n"
        "  max_records: {train: 20, validation: 5, test: 7}\n")
    monkeypatch.setattr("sys.argv", ["prepare", "--out", "out", "--metrics", "m.json"])
    prepare.main()
    lines = {s: (tmp_path / "out" / f"{s}.jsonl").read_text().splitlines() for s in ("train", "validation", "test")}
    assert {s: len(v) for s, v in lines.items()} == {"train": 20, "validation": 5, "test": 7}
    assert json.loads((tmp_path / "m.json").read_text())["records"] == {"train": 20, "validation": 5, "test": 7}
    assert json.loads((tmp_path / "out" / "task.json").read_text())["metric"] == "sql_execution"
    assert not [f for f in os.listdir(tmp_path / "out") if f.endswith(".tmp")]


def test_unknown_dataset_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="cannot load dataset"):
        prepare.load_raw(PrepareParams(dataset=str(tmp_path / "nope.jsonl")))
