"""compare: baseline against fine-tuned on the same items, paired, from real evaluate outputs."""

import json

import pytest

from sft.params import UserError
from stages import compare, evaluate


def test_multiple_choice_confusion_and_the_paired_comparison(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"id": i, "prompt": [{"role": "user", "content": f"Question {i}?"}],
             "completion": [{"role": "assistant", "content": f"... the answer is ({'ABCD'[i % 4]})."}],
             "references": {}} for i in range(4)]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "task.json").write_text(json.dumps({"metric": "multiple_choice", "references": []}))
    (tmp_path / "params.yaml").write_text("evaluate:\n  max_new_tokens: 3\n  batch_size: 4\n")
    monkeypatch.setattr("sys.argv", ["evaluate", "--model", str(tiny_model_dir), "--name", "baseline",
                                     "--data", str(data), "--out", "metrics"])
    evaluate.main()
    confusion = json.loads((tmp_path / "metrics" / "confusion" / "baseline.json").read_text())
    assert confusion == [{"actual": "ABCD"[i % 4], "predicted": "none"} for i in range(4)]

    # A fine-tuned model that answers items 0 and 1 right: two improved, none regressed.
    finetuned = [json.loads(line) for line in (tmp_path / "metrics" / "predictions" / "baseline.jsonl").open()]
    for r in finetuned[:2]:
        r["accuracy"] = 1.0
    (tmp_path / "metrics" / "predictions" / "finetuned.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in finetuned))
    monkeypatch.setattr("sys.argv", ["compare", "--predictions", "metrics/predictions", "--data", str(data),
                                     "--out", "metrics"])
    compare.main()
    figures = json.loads((tmp_path / "metrics" / "compare.json").read_text())
    assert (figures["baseline"], figures["finetuned"], figures["difference"]) == (0.0, 0.5, 0.5)
    assert (figures["improved"], figures["regressed"], figures["mcnemar_p"]) == (2, 0, 0.5)
    assert json.loads((tmp_path / "metrics" / "flips.json").read_text()) == {"improved": [0, 1], "regressed": []}


def test_predictions_of_different_items_are_refused(tmp_path):
    (tmp_path / "baseline.jsonl").write_text('{"id": 1, "accuracy": 0.0}\n{"id": 2, "accuracy": 1.0}\n')
    (tmp_path / "finetuned.jsonl").write_text('{"id": 1, "accuracy": 1.0}\n{"id": 3, "accuracy": 1.0}\n')
    with pytest.raises(UserError, match="hold different test items; rerun both evaluate stages"):
        compare.paired(tmp_path / "baseline.jsonl", tmp_path / "finetuned.jsonl")
