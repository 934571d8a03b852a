"""compare: the fine-tuned model against each baseline (zero-shot and few-shot) on the same items,
paired, from real evaluate and fewshot outputs."""

import json

import pytest
from conftest import multiple_choice_data, stage_main

from sft.pairing import paired
from sft.params import UserError


def test_multiple_choice_confusion_and_the_paired_comparison(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = multiple_choice_data(tmp_path / "data", with_train=True)
    (tmp_path / "params.yaml").write_text("evaluate:\n  max_new_tokens: 3\n  batch_size: 4\nfewshot:\n  shots: 2\n")
    monkeypatch.setattr("sys.argv", ["evaluate", "--model", str(tiny_model_dir), "--name", "baseline",
                                     "--data", str(data), "--out", "metrics"])
    stage_main("evaluate")()
    confusion = json.loads((tmp_path / "metrics" / "confusion" / "baseline.json").read_text())
    assert confusion == [{"actual": "ABCD"[i % 4], "predicted": "none"} for i in range(4)]

    monkeypatch.setattr("sys.argv", ["fewshot", "--model", str(tiny_model_dir), "--data", str(data), "--out", "metrics"])
    stage_main("fewshot")()
    assert json.loads((tmp_path / "metrics" / "fewshot.json").read_text())["samples"] == 4

    # A fine-tuned model that answers items 0 and 1 right: two improved, none regressed.
    finetuned = [json.loads(line) for line in (tmp_path / "metrics" / "predictions" / "baseline.jsonl").open()]
    for r in finetuned[:2]:
        r["accuracy"] = 1.0
    (tmp_path / "metrics" / "predictions" / "finetuned.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in finetuned))
    details = tmp_path / "metrics" / "benchmarks" / "details"  # each benchmark item's outcome, both models
    details.mkdir(parents=True)
    for name, outcomes in (("baseline", [1, 0, 0]), ("finetuned", [1, 1, 0])):
        (details / f"{name}.jsonl").write_text("".join(
            json.dumps({"task": "sft_reading", "doc_id": i, "doc_hash": f"h{i}", "acc": float(v)}) + "\n"
            for i, v in enumerate(outcomes)))
    monkeypatch.setattr("sys.argv", ["compare", "--finetuned", "metrics/predictions/finetuned.jsonl",
                                     "--baseline", "metrics/predictions/baseline.jsonl",
                                     "--against", "metrics/predictions/fewshot.jsonl", "--data", str(data),
                                     "--out", "metrics"])
    stage_main("compare")()
    figures = json.loads((tmp_path / "metrics" / "compare.json").read_text())
    assert (figures["baseline"], figures["finetuned"], figures["difference"]) == (0.0, 0.5, 0.5)
    assert (figures["improved"], figures["regressed"], figures["mcnemar_p"]) == (2, 0, 0.5)
    bench = figures["benchmarks"]["sft_reading"]["acc"]
    assert (bench["baseline"], bench["finetuned"], bench["items"], bench["improved"]) == (0.3333, 0.6667, 3, 1)
    few = json.loads((tmp_path / "metrics" / "predictions" / "fewshot.jsonl").read_text().splitlines()[0])
    against = figures["against_fewshot"]
    assert set(against) == {"fewshot", "difference", "difference_ci_low", "difference_ci_high", "improved",
                            "regressed", "mcnemar_p"}
    assert against["fewshot"] + against["difference"] == figures["finetuned"] and few["id"] == 0
    assert json.loads((tmp_path / "metrics" / "flips.json").read_text()) == {
        "improved": [0, 1], "regressed": [],
        "against_fewshot": {"improved": against_fewshot_improved(tmp_path), "regressed": []}}


def against_fewshot_improved(run) -> list[int]:
    """Items the fine-tuned model (items 0 and 1 right) got right where the few-shot one did not."""
    fewshot = [json.loads(line) for line in (run / "metrics" / "predictions" / "fewshot.jsonl").open()]
    return [r["id"] for r in fewshot if r["id"] < 2 and r["accuracy"] == 0.0]


def test_predictions_of_different_items_are_refused(tmp_path):
    (tmp_path / "baseline.jsonl").write_text('{"id": 1, "accuracy": 0.0}\n{"id": 2, "accuracy": 1.0}\n')
    (tmp_path / "finetuned.jsonl").write_text('{"id": 1, "accuracy": 1.0}\n{"id": 3, "accuracy": 1.0}\n')
    with pytest.raises(UserError, match="hold different test items; rerun the evaluations"):
        paired(tmp_path / "baseline.jsonl", tmp_path / "finetuned.jsonl")


def test_fewshot_prompts_show_the_same_seeded_train_examples_before_each_test_prompt():
    from sft.fewshot import examples, with_examples

    train = [{"id": i, "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"q{i}"}],
              "completion": [{"role": "assistant", "content": f"a{i}"}]} for i in range(10)]
    shown = examples(train, 3, seed=0, where="train.jsonl")
    assert shown == examples(train, 3, seed=0, where="train.jsonl") != examples(train, 3, seed=1, where="train.jsonl")
    test = [{"role": "system", "content": "Answer."}, {"role": "user", "content": "the question"}]
    prompt = with_examples(test, shown)
    assert prompt[0] == test[0] and prompt[-1] == test[-1] and len(prompt) == 2 + 2 * 3
    assert [m["content"] for m in prompt[1:-1]] == [x for r in shown for x in (f"q{r['id']}", f"a{r['id']}")]
    assert with_examples(test, []) == test
    with pytest.raises(UserError, match="fewshot.shots is 11 but train.jsonl holds 10 records; lower fewshot.shots"):
        examples(train, 11, seed=0, where="train.jsonl")


def test_compare_pairs_every_baseline_it_is_given_each_under_its_name(tmp_path, monkeypatch):
    """A baseline of a new kind is one more file after --against: paired once, named by its file."""
    rows = {"baseline": [0, 0, 1, 0], "fewshot": [1, 0, 1, 0], "retrieval": [1, 1, 1, 0], "finetuned": [1, 1, 1, 1]}
    for name, scores in rows.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"id": i, "accuracy": float(s)}) + "\n"
                                                        for i, s in enumerate(scores)))
    data = tmp_path / "data"
    data.mkdir()
    (data / "task.json").write_text(json.dumps({"metric": "multiple_choice", "references": []}))
    monkeypatch.chdir(tmp_path)
    bench = tmp_path / "bench"
    bench.mkdir()
    for name in ("baseline", "finetuned"):
        (bench / f"{name}.jsonl").write_text(json.dumps({"task": "t", "doc_id": 0, "doc_hash": "h", "acc": 1.0}) + "\n")
    argv = ["compare", "--finetuned", "finetuned.jsonl", "--baseline", "baseline.jsonl", "--benchmarks", "bench",
            "--data", "data", "--out", "out"]
    monkeypatch.setattr("sys.argv", [*argv, "--against", "fewshot.jsonl", "retrieval.jsonl"])
    stage_main("compare")()
    figures = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert (figures["baseline"], figures["finetuned"]) == (0.25, 1.0)
    assert [k for k in figures if k.startswith("against_")] == ["against_fewshot", "against_retrieval"]
    assert figures["against_retrieval"]["retrieval"] == 0.75 and figures["against_retrieval"]["improved"] == 1
    flips = json.loads((tmp_path / "out" / "flips.json").read_text())
    assert flips["against_retrieval"] == {"improved": [3], "regressed": []}
    monkeypatch.setattr("sys.argv", [*argv, "--against", "fewshot.jsonl", "sub/fewshot.jsonl"])
    with pytest.raises(UserError, match="two baselines named fewshot"):
        stage_main("compare")()
