"""The task metrics of sft/metrics.py: SQL execution, multiple choice, summaries, and the registry."""

import pytest

from sft.metrics import aggregate, extract_sql, metric_named, normalize_sql, sql_execution
from sft.params import UserError

CONTEXT = ("CREATE TABLE t (id INT, name TEXT, price REAL); "
           "INSERT INTO t VALUES (1, 'Lamp', 10.5), (2, 'Desk', 99.0), (3, 'Mug', 3.25);")


@pytest.mark.parametrize("reply, query", [
    ("SELECT name FROM t;", "SELECT name FROM t;"),
    ("Here you go:\n```sql\nSELECT name\nFROM t\n```\nDone.", "SELECT name\nFROM t"),
    ("The answer is SELECT COUNT(*) FROM t; hope it helps", "SELECT COUNT(*) FROM t;"),
    ("I cannot answer that.", ""),
])
def test_extract_sql(reply, query):
    assert extract_sql(reply) == query


def test_same_rows_in_another_order_match_when_gold_does_not_order():
    s = sql_execution("SELECT name FROM t ORDER BY name;", "SELECT name FROM t;", {"sql_context": CONTEXT})
    assert s["execution_accuracy"] == 1.0 and s["exact_match"] == 0.0


def test_order_matters_when_gold_orders():
    gold = "SELECT name FROM t ORDER BY price DESC;"
    wrong = sql_execution("SELECT name FROM t ORDER BY price ASC;", gold, {"sql_context": CONTEXT})
    right = sql_execution("select name from t order by price desc", gold, {"sql_context": CONTEXT})
    assert wrong["execution_accuracy"] == 0.0
    assert right["execution_accuracy"] == 1.0 and right["exact_match"] == 1.0


def test_failing_and_missing_queries_are_wrong_and_counted():
    broken = sql_execution("SELECT nme FROM t;", "SELECT name FROM t;", {"sql_context": CONTEXT})
    prose = sql_execution("Paris is the capital of France.", "SELECT name FROM t;", {"sql_context": CONTEXT})
    for s in (broken, prose):
        assert s["execution_accuracy"] == 0.0 and s["execution_error_rate"] == 1.0


def test_different_rows_do_not_match():
    s = sql_execution("SELECT name FROM t WHERE price > 5;", "SELECT name FROM t;", {"sql_context": CONTEXT})
    assert s["execution_accuracy"] == 0.0 and s["execution_error_rate"] == 0.0


def test_aggregate_averages_numeric_figures_only():
    rows = [{"a": 1.0, "answer": "x"}, {"a": 0.0, "answer": "y"}, {"a": 1.0, "answer": ""}]
    assert aggregate(rows) == {"a": round(2 / 3, 4)}


def test_normalize_sql():
    assert normalize_sql("  SELECT  a\nFROM t ; ") == "select a from t"


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(UserError, match="sql_execution"):
        metric_named("bleu")


@pytest.mark.parametrize("reply, accuracy, unparseable", [
    ("Infection is likely. Therefore, the answer is (B).", 1.0, 0.0),
    ("the answer is (A) ... on reflection the answer is (B)", 1.0, 0.0),  # the last statement counts
    ("The answer is C.", 0.0, 0.0),
    ("B", 0.0, 1.0),  # a bare letter is not a parseable answer: wrong, always
    ("I am not sure.", 0.0, 1.0),
])
def test_multiple_choice_reads_the_answer_is_x(reply, accuracy, unparseable):
    s = metric_named("multiple_choice").score(reply, "Reasoning ... the answer is (B).", {})
    assert (s["accuracy"], s["unparseable"]) == (accuracy, unparseable)


def test_gold_sql_sqlite_cannot_run_is_judged_by_exact_match():
    gold = "SELECT name FROM t LIMIT 1 OFFSET 0 FOR UPDATE;"  # not SQLite
    assert sql_execution(gold, gold, {"sql_context": CONTEXT})["execution_accuracy"] == 1.0
    assert sql_execution("SELECT 1;", gold, {"sql_context": CONTEXT})["execution_accuracy"] == 0.0


def test_summary_counts_german_words_whole_and_empty_is_unparseable():
    summary = metric_named("summary").score

    gold = "Die Kündigung ist gültig, weil die Frist eingehalten wurde."
    same = summary(gold, gold, {})
    assert same["rouge1"] == same["rougeL"] == 1.0 and same["chrf"] == 1.0 and same["unparseable"] == 0.0
    # "ungültig" is one word, not "ung" + "ltig": one of nine unigrams differs.
    near = summary("Die Kündigung ist ungültig, weil die Frist eingehalten wurde.", gold, {})
    assert near["rouge1"] == pytest.approx(8 / 9, abs=1e-6) and 0.5 < near["chrf"] < 1.0
    assert summary("   ", gold, {}) | {"answer": ""} == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0, "chrf": 0.0,
                                                       "unparseable": 1.0, "answer": ""}


@pytest.mark.parametrize("name, predictions, references, contexts", [
    ("sql_execution", ["SELECT name FROM t;", "no idea"], ["SELECT name FROM t;"] * 2, [{"sql_context": CONTEXT}] * 2),
    ("multiple_choice", ["so the answer is (A).", "B"], ["the answer is (A)", "the answer is (B)"], [{}, {}]),
    ("summary", ["Die Frist lief ab.", ""], ["Die Frist ist abgelaufen.", "Text."], [{}, {}]),
])
def test_local_evaluate_modules_load_by_path_and_agree_with_the_scorers(name, predictions, references, contexts):
    import evaluate
    from conftest import ROOT

    from sft.metrics import score_all

    result = evaluate.load(str(ROOT / "task_metrics" / name)).compute(
        predictions=predictions, references=references, contexts=contexts)
    direct = score_all(name, predictions, references, contexts)
    assert result["per_record"] == direct
    assert {k: v for k, v in result.items() if k != "per_record"} == aggregate(direct)
    assert result["unparseable_rate"] == 0.5  # the second reply of each case has no answer in it
