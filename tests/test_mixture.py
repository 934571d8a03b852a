"""Dataset mixtures (prepare.datasets): weights as shares or counts, repeats, per-source counts,
evaluation from every source or the first, and clear errors for bad declarations."""

import json
import random

import pytest
from conftest import ROOT, stage_main

from sft import mixture
from sft.params import UserError

RAW = ROOT / "data" / "raw"


def source(dataset, **kw):
    return mixture.Source(dataset, **kw)


def test_shares_split_the_mixed_train_split_and_counts_are_counts():
    shares = [source("a", weight=0.75), source("b", weight=0.25)]
    assert mixture.train_counts(shares, [300, 100]) == [300, 100]
    assert mixture.train_counts([source("a", weight=0.5), source("b", weight=0.5)], [300, 100]) == [200, 200]
    assert mixture.train_counts([source("a", weight=50), source("b")], [300, 100]) == [50, 100]


def test_more_than_a_source_holds_repeats_whole_copies_then_a_seeded_draw():
    records = list(range(10))
    drawn = mixture.drawn(records, 25, random.Random(0))
    assert len(drawn) == 25 and drawn[:20] == records * 2 and len(set(drawn[20:])) == 5
    assert drawn == mixture.drawn(records, 25, random.Random(0))  # seeded
    assert mixture.drawn(records, 10, random.Random(0)) == records  # all: unchanged, in order
    assert len(set(mixture.drawn(records, 4, random.Random(0)))) == 4


@pytest.mark.parametrize("entries, message", [
    ([{"dataset": "a", "weight": 0.5}, {"dataset": "b", "weight": 30}], "mixes shares .* with counts"),
    ([{"dataset": "a", "weight": 0.5}, {"dataset": "b"}], "mixes shares"),
    ([{"dataset": "a", "weight": 0.5}, {"dataset": "b", "weight": 0.4}], "shares sum to 0.9; they must sum to 1.0"),
    ([{"dataset": "a", "weight": 1.5}], r"weight 1.5 of a is not a share in \(0, 1\]"),
    ([{"dataset": "a", "weight": 0}], "must be at least 1 record"),
    ([{"dataset": "a", "wieght": 3}], r"prepare.datasets\[0\]: unknown key 'wieght' \(did you mean 'weight'\?\)"),
    ([{"prompts": "p"}], r"prepare.datasets\[0\] must be a mapping with at least 'dataset'"),
    ([{"dataset": "data/a"}, {"dataset": "other/a"}], "names the same source twice"),
])
def test_bad_mixtures_name_the_entry_and_the_fix(entries, message):
    with pytest.raises(UserError, match=message):
        mixture.sources(entries, "x", None, None, "prompts/x")


def test_the_single_dataset_form_is_one_source_with_all_its_records():
    [only] = mixture.sources([], "data/raw/sql", None, None, "prompts/sql")
    assert only == mixture.Source("data/raw/sql", None, None, "prompts/sql", None)


def run_prepare(tmp_path, tokenizer_dir, monkeypatch, datasets, extra=""):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(
        f"prepare:\n  prompts: {ROOT / 'prompts' / 'arithmetic'}\n  datasets: {json.dumps(datasets)}\n{extra}"
        "  max_length: 1024\n")
    monkeypatch.setattr("sys.argv", ["prepare", "--model", str(tokenizer_dir), "--out", "out", "--metrics", "m.json"])
    stage_main("prepare")()
    splits = {name: [json.loads(line) for line in (tmp_path / "out" / f"{name}.jsonl").read_text().splitlines()]
              for name in ("train", "validation", "test")}
    return splits, json.loads((tmp_path / "m.json").read_text())


def test_a_two_source_mixture_prepares_with_its_counts_recorded(tmp_path, tokenizer_dir, monkeypatch, capsys):
    """Single-turn arithmetic (templates) and multi-turn arithmetic (messages, its own prompts
    folder): 50 records of the first, 45 of the second, which holds 20 train records and repeats."""
    datasets = [{"dataset": str(RAW / "arithmetic"), "weight": 50},
                {"dataset": str(RAW / "arithmetic-chat"), "prompts": str(ROOT / "prompts" / "arithmetic-chat"),
                 "weight": 45}]
    splits, metrics = run_prepare(tmp_path, tokenizer_dir, monkeypatch, datasets)
    assert "arithmetic-chat: 45 train records from 20: records repeat (2.25 times on average)" in capsys.readouterr().out
    assert metrics["sources"]["arithmetic"]["records"] == {"train": 50, "validation": 20, "test": 20}
    assert metrics["sources"]["arithmetic-chat"]["records"] == {"train": 45, "validation": 10, "test": 10}
    assert metrics["sources"]["arithmetic-chat"]["available"] == {"train": 20, "validation": 10, "test": 10}
    assert metrics["records"] == {"train": 95, "validation": 30, "test": 30}
    chat = [r for r in splits["train"] if r["id"].startswith("arithmetic-chat/")]
    assert len(chat) == 45 and len({r["id"] for r in chat}) == 20  # every record, some twice or three times
    assert all(len(r["prompt"]) >= 4 for r in chat)  # the multi-turn ones, rendered from their own messages
    single = [r for r in splits["train"] if r["id"].startswith("arithmetic/")]
    assert len(single) == 50 and [m["role"] for m in single[0]["prompt"]] == ["system", "user"]
    assert {r["id"].split("/")[0] for r in splits["test"]} == {"arithmetic", "arithmetic-chat"}

    again, _ = run_prepare(tmp_path, tokenizer_dir, monkeypatch, datasets)
    assert again == splits  # seeded


def test_evaluation_from_the_first_source_only(tmp_path, tokenizer_dir, monkeypatch):
    datasets = [{"dataset": str(RAW / "arithmetic"), "weight": 0.5},
                {"dataset": str(RAW / "arithmetic-chat"), "prompts": str(ROOT / "prompts" / "arithmetic-chat"),
                 "weight": 0.5}]
    splits, metrics = run_prepare(tmp_path, tokenizer_dir, monkeypatch, datasets, "  eval_sources: first\n")
    assert metrics["records"] == {"train": 90, "validation": 20, "test": 20}  # shares of 70 + 20 train records
    assert all(r["id"].startswith("arithmetic/") for r in splits["test"] + splits["validation"])
    assert metrics["sources"]["arithmetic-chat"]["records"] == {"train": 45, "validation": 0, "test": 0}


def test_a_test_source_of_another_metric_is_an_error(tmp_path, tokenizer_dir, monkeypatch):
    datasets = [{"dataset": str(RAW / "arithmetic"), "weight": 20},
                {"dataset": str(RAW / "sql"), "prompts": str(ROOT / "prompts" / "sql"), "weight": 20}]
    with pytest.raises(UserError, match=r"prompts/sql/task.yaml names metric sql_execution, but the run scores with "
                                        r"answer_match .* set prepare.eval_sources: first"):
        run_prepare(tmp_path, tokenizer_dir, monkeypatch, datasets)
    # Trained on, not scored: the SQL records need none of the arithmetic task's fields.
    splits, metrics = run_prepare(tmp_path, tokenizer_dir, monkeypatch, datasets, "  eval_sources: first\n")
    assert metrics["sources"]["sql"]["records"]["train"] == 20 and len(splits["test"]) == 20
