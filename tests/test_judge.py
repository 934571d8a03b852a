"""The judge: a model that reads the base and fine-tuned replies to the same test prompt. Each pair
is asked in both orders, so a judge that always prefers one position gives ties, never wins; a
judge that prefers the better reply wherever it stands gives wins; hostile judge replies (empty,
huge, no verdict, both verdicts) are counted as no verdict, never a crash. Scores keep the judge's
reason. A real (tiny) judge runs end to end through the stage, and its replies are kept."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import stage_main, tiny_params

from sft import generation
from sft.judging import JudgeParams
from sft.params import UserError
from sft.verdicts import Request, judge_and_write, preference, rating, rubric, winner

PAIRWISE = "Question: {{ question }}\nReference: {{ reference }}\n1: {{ first }}\n2: {{ second }}\nVerdict?"
SCORE = "Question: {{ question }}\nReference: {{ reference }}\nReply: {{ reply }}\nRate 1-10 as [[N]]."


def run_folder(tmp_path: Path, before: list[str], after: list[str], mode: str = "pairwise") -> Request:
    """A prepared test split of len(before) items, both models' predictions, a rubric: a judge request."""
    data, predictions = tmp_path / "data", tmp_path / "predictions"
    data.mkdir(exist_ok=True)
    predictions.mkdir(exist_ok=True)
    records = [{"id": i, "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"q{i}"}],
                "completion": [{"role": "assistant", "content": f"gold{i}"}], "references": {}}
               for i in range(len(before))]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for name, replies in (("baseline", before), ("finetuned", after)):
        (predictions / f"{name}.jsonl").write_text("".join(json.dumps({"id": i, "prediction": p}) + "\n"
                                                           for i, p in enumerate(replies)))
    (tmp_path / "rubric.jinja").write_text(PAIRWISE if mode == "pairwise" else SCORE)
    p = JudgeParams(folders={"stub": "judge-folder"}, rubric=str(tmp_path / "rubric.jinja"), mode=mode)
    return Request("stub", "folders", "judge-folder", data, predictions, tmp_path / "out", p)


def scripted(monkeypatch, answer) -> list[str]:
    """The judge as a script: `answer(prompt text)` is its reply; returns the prompts it was asked."""
    asked = []

    def replies(model, prompts, settings, backend="transformers", known=None, keep=None, label=""):
        texts = [p[-1]["content"] for p in prompts]
        asked.extend(texts)
        said = [answer(t) for t in texts]
        if keep is not None:
            keep(dict(enumerate(said)))
        return said, {}

    monkeypatch.setattr(generation, "replies", replies)
    monkeypatch.setattr("sft.replies.digest", lambda *a, **k: "scripted")
    return asked


def test_a_judge_that_always_prefers_the_second_position_gives_ties_not_wins(tmp_path, monkeypatch):
    r = run_folder(tmp_path, ["base a", "base b", "same", "base d"], ["tuned a", "tuned b", "same", "tuned d"])
    asked = scripted(monkeypatch, lambda prompt: "Reply 2 reads better. [[2]]")
    result = judge_and_write(r, "judge-folder", {"folder": "judge-folder"})
    # Three different pairs asked twice each; the identical replies are a tie without asking.
    assert len(asked) == 6 and "1: base a\n2: tuned a" in asked[0] and "1: tuned a\n2: base a" in asked[1]
    assert "Question: q0" in asked[0] and "Reference: gold0" in asked[0]
    assert (result["win_rate"], result["wins"], result["losses"], result["ties"]) == (0.5, 0, 0, 4)
    assert result["flipped_with_order"] == 3 and result["no_verdict"] == 0 and result["judged"] == 4
    rows = [json.loads(line) for line in (r.out / "verdicts" / "stub.jsonl").open()]
    assert [(x["base_first"], x["finetuned_first"], x["outcome"], x["asked"]) for x in rows][1:3] == \
        [("2", "2", "tie", True), ("tie", "tie", "tie", False)]
    assert json.loads((r.out / "stub.json").read_text()) == result


def test_a_judge_that_prefers_the_better_reply_wherever_it_stands_gives_wins(tmp_path, monkeypatch):
    r = run_folder(tmp_path, ["poor", "GOOD", "poor", "poor"], ["GOOD", "poor", "GOOD", "GOOD"])

    def content(prompt):  # it reads the replies, not their places
        first = prompt.split("\n1: ")[1].split("\n2: ")[0]
        return "[[1]]" if first == "GOOD" else "[[2]]"

    scripted(monkeypatch, content)
    result = judge_and_write(r, "judge-folder", {"folder": "judge-folder"})
    assert (result["wins"], result["losses"], result["ties"], result["flipped_with_order"]) == (3, 1, 0, 0)
    assert result["win_rate"] == 0.75 and result["win_rate_ci_low"] <= 0.75 <= result["win_rate_ci_high"]


HOSTILE = ["", "x" * 1_000_000, "I cannot decide.", "[[1]] no wait [[2]]", "[[3]]", "\x00\udcff[[", "[[ 1 ]]",
           "[[TIE]]"]


def test_hostile_judge_replies_are_counted_as_no_verdict_never_a_crash(tmp_path, monkeypatch):
    assert [preference(h) for h in HOSTILE] == [None, None, None, None, None, None, "1", "tie"]
    n = len(HOSTILE)
    r = run_folder(tmp_path, [f"b{i}" for i in range(n)], [f"t{i}" for i in range(n)])
    scripted(monkeypatch, lambda prompt: HOSTILE[int(prompt.split("q", 1)[1].split("\n")[0])])
    result = judge_and_write(r, "judge-folder", {"folder": "judge-folder"})
    # Each item got the same hostile reply in both orders: six without a verdict; "[[ 1 ]]" both
    # times is the first position both times (a flip: tie), "[[TIE]]" a tie.
    assert (result["no_verdict"], result["judged"], result["ties"], result["items"]) == (6, 2, 2, n)
    assert result["win_rate"] == 0.5
    rows = [json.loads(line) for line in (r.out / "verdicts" / "stub.jsonl").open()]
    assert max(len(x["judge_base_first"]) for x in rows) <= 400  # the judge's words kept, bounded


def test_winner_needs_both_orders_to_agree():
    assert winner("2", "1") == "finetuned" and winner("1", "2") == "baseline"
    assert winner("1", "1") == "tie" and winner("tie", "1") == "tie"
    assert winner(None, "1") is None and winner("2", None) is None


def test_scores_keep_the_judges_reason_and_refuse_unreadable_ratings(tmp_path, monkeypatch):
    assert rating("Clear and correct. [[8]]") == (8, "Clear and correct.")
    assert rating("[[10]]")[0] == 10
    for bad in ("", "[[11]]", "[[0]]", "[[3]] or maybe [[8]]", "eight out of ten", "y" * 100_000):
        value, reason = rating(bad)
        assert value is None and len(reason) <= 400
    r = run_folder(tmp_path, ["b0", "b1", "b2"], ["t0", "t1", "t2"], mode="score")
    scripted(monkeypatch, lambda prompt: "Weak. [[3]]" if "Reply: b" in prompt else
             ("no rating" if "Reply: t2" in prompt else "Strong. [[8]]"))
    result = judge_and_write(r, "judge-folder", {"folder": "judge-folder"})
    assert (result["baseline_score"], result["finetuned_score"], result["judged"]) == (3.0, 8.0, 2)
    assert (result["no_verdict_baseline"], result["no_verdict_finetuned"], result["difference"]) == (0, 1, 5.0)
    row = json.loads((r.out / "verdicts" / "stub.jsonl").read_text().splitlines()[0])
    assert row == {"id": 0, "baseline_score": 3, "baseline_reason": "Weak.", "finetuned_score": 8,
                   "finetuned_reason": "Strong."}


@pytest.mark.parametrize("text, mode, said", [
    ("{{ first }} {{ secret }}", "pairwise", r"reads \['secret'\], which judge.mode pairwise does not give"),
    ("{{ reply }}", "pairwise", r"reads \['reply'\]"),
    ("{{ first }", "pairwise", "template syntax error"),
])
def test_a_rubric_is_checked_before_the_judge_loads(tmp_path, text, mode, said):
    (tmp_path / "judge.jinja").write_text(text)
    with pytest.raises(UserError, match=said):
        rubric(tmp_path / "judge.jinja", mode)
    with pytest.raises(UserError, match="is missing; write the judge's prompt"):
        rubric(tmp_path / "none.jinja", mode)
    (tmp_path / "latin1.jinja").write_bytes("Urteil {{ first }} {{ second }} \xfcber".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.jinja: not UTF-8 text \(byte 32\)"):
        rubric(tmp_path / "latin1.jinja", "pairwise")


def test_a_rubric_cannot_reach_python_internals(tmp_path, monkeypatch):
    r = run_folder(tmp_path, ["a"], ["b"])
    (tmp_path / "rubric.jinja").write_text("{{ first.__class__.__mro__[1].__subclasses__() }} {{ second }}")
    scripted(monkeypatch, lambda prompt: "[[1]]")
    with pytest.raises(UserError, match=r"rubric.jinja: SecurityError: .*fix the rubric"):
        judge_and_write(r, "judge-folder", {"folder": "judge-folder"})


def test_the_tiny_model_judges_through_the_stage_and_its_replies_are_kept(tiny_model_dir, tmp_path, monkeypatch):
    run_folder(tmp_path, ["SELECT 1", "SELECT a FROM t", "x"], ["SELECT 2", "SELECT b FROM t", "y"])
    params = tiny_params()
    params["judge"] |= {"folders": {"tiny": str(tiny_model_dir)}, "rubric": str(tmp_path / "rubric.jinja"),
                        "max_new_tokens": 6}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    argv = ["judge_folder", "--name", "tiny", "--data", "data", "--predictions", "predictions", "--out", "out"]
    monkeypatch.setattr("sys.argv", argv)
    stage_main("judge_folder")()
    result = json.loads((tmp_path / "out" / "tiny.json").read_text())
    assert result["judge"] == {"folder": str(tiny_model_dir)} and result["mode"] == "pairwise"
    assert result["items"] == 3 and result["judged"] + result["no_verdict"] == 3  # random weights: any verdict
    assert (result["win_rate"] is None) == (result["judged"] == 0)  # nothing judged: no rate, not a rate of 0
    kept = list((tmp_path / "out" / "replies.partial").glob("tiny-*.jsonl"))
    assert len(kept) == 1 and len(kept[0].read_text().splitlines()) == 6
    monkeypatch.setattr(generation, "replies", lambda *a, **k: pytest.fail("a kept verdict was asked again"))
    stage_main("judge_folder")()
    assert json.loads((tmp_path / "out" / "tiny.json").read_text()) == result
