"""The task metrics of sft/metrics.py: SQL execution (queries and data changes), multiple choice,
declared answers, exact match, JSON, summaries, and the registry."""

import pytest

from sft.metrics import aggregate, metric_named, sql_execution
from sft.params import UserError
from sft.sql import extract_sql, normalize_sql

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
    ("The answer is B.", 1.0, 0.0),
    ("The answer is B, since the fever ...", 1.0, 0.0),
    ("B", 0.0, 1.0),  # a bare letter is not a parseable answer: wrong, always
    # Words that start with a letter are not letters: the baseline's verbose replies earn nothing.
    ("The answer is a lower dose.", 0.0, 1.0),
    ("the answer is: d-dimer", 0.0, 1.0),
    ("the answer is E. coli infection", 0.0, 1.0),
    ("The answer is Bacterial meningitis.", 0.0, 1.0),
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
    ("error_rate", ["a b c d", ""], ["a b c e", "x y"], [{}, {}]),
])
def test_local_evaluate_modules_load_by_path_and_agree_with_the_scorers(name, predictions, references, contexts):
    import evaluate
    from conftest import ROOT

    from sft.metrics import metric_named, score_all
    from sft.scoring import scores
    from sft.task import Task

    result = evaluate.load(str(ROOT / "task_metrics" / name)).compute(
        predictions=predictions, references=references, contexts=contexts)
    direct = score_all(name, predictions, references, contexts)
    assert result["per_record"] == direct
    assert {k: v for k, v in result.items() if k != "per_record"} == aggregate(direct)
    assert result["unparseable_rate"] == 0.5  # the second reply of each case has no answer in it
    # The stages' one scorer gives the same records and figures, plus the headline's interval.
    records = [{"completion": [{"role": "assistant", "content": r}], "references": c}
               for r, c in zip(references, contexts, strict=True)]
    staged = scores(Task(metric=name), predictions, records)
    assert staged.per_record == result["per_record"]
    primary = metric_named(name).primary
    assert list(staged.figures)[:3] == [primary, f"{primary}_ci_low", f"{primary}_ci_high"]
    assert {k: v for k, v in staged.figures.items() if "_ci_" not in k and k != "samples"} == \
        {k: v for k, v in result.items() if k != "per_record"}
    assert staged.figures[f"{primary}_ci_low"] <= staged.figures[primary] <= staged.figures[f"{primary}_ci_high"]
    assert staged.figures["samples"] == len(predictions)


@pytest.mark.parametrize("reply, letter", [
    ("The answer is a lower dose.", None), ("the answer is: d-dimer", None),
    ("the answer is E. coli infection", None), ("the answer is (C).", "C"), ("The answer is C.", "C"),
    ("so the answer is (b)", "B"), ("The answer is D\nNext question", "D"), ("The answer is C because", None),
])
def test_the_letter_counts_only_in_parentheses_or_standing_alone(reply, letter):
    from sft.answers import answer_letter

    assert answer_letter(reply) == letter


TABLES = ("CREATE TABLE t (id INT, name TEXT, price REAL); "
          "INSERT INTO t VALUES (1, 'Lamp', 10.5), (2, 'Desk', 99.0), (3, 'Mug', 3.25);")


@pytest.mark.parametrize("gold, right, wrong", [
    ("INSERT INTO t VALUES (4, 'Pen', 1.5);", "insert into t (id, name, price) values (4, 'Pen', 1.5)",
     "INSERT INTO t VALUES (4, 'Pen', 2.5);"),
    ("UPDATE t SET price = price * 2 WHERE name = 'Mug';", "```sql\nUPDATE t SET price = 6.5 WHERE id = 3;\n```",
     "UPDATE t SET price = price * 2;"),
    ("DELETE FROM t WHERE price > 50;", "Here it is: DELETE FROM t WHERE name = 'Desk';",
     "DELETE FROM t WHERE price > 5;"),
    ("CREATE TABLE s (id INT, note TEXT);", "CREATE TABLE s (id INTEGER, note TEXT);",
     "CREATE TABLE s (id INT, text TEXT);"),
    ("ALTER TABLE t ADD COLUMN stock INT;", "alter table t add column stock integer;",
     "ALTER TABLE t ADD COLUMN stocks INT;"),
    ("DROP TABLE t;", "DROP TABLE IF EXISTS t;", "DELETE FROM t;"),
])
def test_a_data_change_is_judged_by_the_state_it_leaves(gold, right, wrong):
    refs = {"sql_context": TABLES}
    assert sql_execution(right, gold, refs)["execution_accuracy"] == 1.0
    bad = sql_execution(wrong, gold, refs)
    assert bad["execution_accuracy"] == 0.0 and bad["unparseable"] == 0.0
    # A query answering a data change, or prose, is wrong; prose has no SQL in it.
    assert sql_execution("SELECT * FROM t;", gold, refs)["execution_accuracy"] == 0.0
    assert sql_execution("You should update the table and drop it.", gold, refs)["unparseable"] == 1.0


def test_a_question_is_not_answered_by_an_echoed_schema():
    s = sql_execution(f"Tables: {TABLES}", "SELECT name FROM t;", {"sql_context": TABLES})
    assert s["unparseable"] == 1.0 and s["execution_accuracy"] == 0.0


ANSWER = {"pattern": r"####\s*(-?[\d,]*\.?\d+)", "compare": "numeric"}


@pytest.mark.parametrize("reply, accuracy, unparseable", [
    ("Half of 36 is 18.\n#### 18", 1.0, 0.0),
    ("#### 18.0", 1.0, 0.0),
    ("First #### 12, then on reflection #### 18", 1.0, 0.0),  # the last match counts
    ("#### 1,800", 0.0, 0.0),  # commas separate thousands: 1800, not 18
    ("The answer is 18.", 0.0, 1.0),  # no '####': nothing the pattern reads
    ("#### 19", 0.0, 0.0),
])
def test_answer_match_reads_the_declared_pattern_from_reply_and_gold(reply, accuracy, unparseable):
    s = metric_named("answer_match").score(reply, "She has 3 x 6 = 18 left.\n#### 18", {}, answer=ANSWER)
    assert (s["accuracy"], s["unparseable"]) == (accuracy, unparseable)


def test_answer_match_compares_exactly_normalized_or_from_a_field():
    score = metric_named("answer_match").score
    pattern = r"Answer:\s*(.+)"
    assert score("Answer: New York!", "Answer: new york", {}, answer={"pattern": pattern, "compare": "normalized"})[
        "accuracy"] == 1.0
    assert score("Answer: New York!", "Answer: new york", {}, answer={"pattern": pattern, "compare": "exact"})[
        "accuracy"] == 0.0
    from_field = {"pattern": pattern, "compare": "numeric", "field": "solution"}
    assert score("Answer: $1,200", "no pattern here", {"solution": 1200}, answer=from_field)["accuracy"] == 1.0


@pytest.mark.parametrize("settings, message", [
    ({}, "needs an `answer:` block with a `pattern:`"),
    ({"answer": {"pattern": r"####\s*\d+"}}, "has no group; put what is the answer in parentheses"),
    ({"answer": {"pattern": r"####\s*(\d+"}}, "does not compile"),
    ({"answer": {"pattern": r"(\d+)", "compare": "fuzzy"}}, "answer.compare is 'fuzzy'; use one of exact, normalized, numeric"),
    ({"answer": {"pattern": r"(\d+)", "comparison": "exact"}}, r"unknown keys \['comparison'\]"),
])
def test_bad_answer_declarations_name_the_fix(settings, message):
    with pytest.raises(UserError, match=message):
        metric_named("answer_match").check(settings, "prompts/gsm/task.yaml")


@pytest.mark.parametrize("text, message", [
    ("metric: [exact_match]\n", "metric is"), ("metric: {a: 1}\n", "metric is"), ("- metric\n", "a mapping"),
    ("metric: exact_match\nreferences: 5\n", "references is 5"),
    ("metric: exact_match\nreferences: [[a]]\n", "references is"),
    ("metric: exact_match\nreferences: sql_context\n", "references is"),
    ("metric: answer_match\nanswer: {pattern: null}\n", "answer.pattern is None"),
    ("metric: answer_match\nanswer: {pattern: 5}\n", "answer.pattern is 5"),
    ("metric: answer_match\nanswer: {pattern: ['(a)']}\n", "answer.pattern is"),
    ("metric: answer_match\nanswer: {pattern: '(a)', field: [x]}\n", "answer.field is"),
    ("metric: answer_match\nanswer: [pattern]\n", "needs an `answer:` block"),
    ("metric: answer_match\nanswer: {pattern: '(a)', compare: [exact]}\n", "answer.compare is"),
    ("metric: json\nfields: name\n", "fields is"),
    ("metric: exact_match\n1: x\n", "unknown keys ['1']"),
    ("metric: &m exact_match\nreferences: [*m]\n", "alias"),
    ("metric: exact_match\nreferences: [\udc80]\n", "UTF-8"),
])
def test_a_task_yaml_value_of_the_wrong_type_is_one_line_naming_the_file(tmp_path, text, message):
    from sft.task import load_task

    (tmp_path / "task.yaml").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(UserError) as stopped:
        load_task(tmp_path)
    assert str(stopped.value).startswith(str(tmp_path / "task.yaml")) and message in str(stopped.value)


@pytest.mark.parametrize("pattern", [r"(a|aa)+$", r"^(a|a?)+$", r"(\w|\d)+x$", r"((ab)*|a)*(c)$"])
def test_a_pattern_that_backtracks_without_end_reads_no_answer_in_bounded_time(pattern):
    import time

    from sft.answers import MATCH_SECONDS

    score = metric_named("answer_match").score
    settings = metric_named("answer_match").check({"answer": {"pattern": pattern}}, "task.yaml")
    started = time.perf_counter()
    for reply in ["a" * 40 + "b", "1" * 5000 + "!", "ab" * 3000 + "!"]:
        assert score(reply, "aaaa", {}, **settings)["unparseable"] in (0.0, 1.0)
    assert time.perf_counter() - started < 3 * (MATCH_SECONDS * 2 + 0.5)


def test_exact_match_and_json():
    exact = metric_named("exact_match").score
    assert exact("  Paris. ", "paris", {})["exact_match"] == 1.0 and exact("", "paris", {})["unparseable"] == 1.0
    as_json = metric_named("json").score
    gold = '{"name": "Ada", "year": 1815, "note": "x"}'
    assert as_json('```json\n{"name": "Ada", "year": 1815}\n```', gold, {}, fields=["name", "year"])["json_match"] == 1.0
    assert as_json('{"name": "Ada", "year": 1816}', gold, {}, fields=["name", "year"])["json_match"] == 0.0
    assert as_json('{"name": "Ada", "year": 1816}', gold, {})["json_match"] == 1.0  # valid JSON, no fields named
    broken = as_json("{'name': 'Ada'}", gold, {})
    assert (broken["json_match"], broken["unparseable"]) == (0.0, 1.0)


def test_every_registered_metric_is_reachable_through_evaluate_with_its_settings():
    import evaluate
    from conftest import ROOT

    from sft.metrics import METRICS, score_all

    cases = {"answer_match": (["#### 18", "no"], ["#### 18", "#### 7"], {"answer": ANSWER}),
             "sql_execution": (["SELECT name FROM t;", "no idea"], ["SELECT name FROM t;"] * 2, {}),
             "json": (['{"a": 1}', "x"], ['{"a": 1}', '{"a": 2}'], {"fields": ["a"]})}
    for name in METRICS:
        predictions, golds, settings = cases.get(name, (["the answer is (A).", ""], ["the answer is (A)", "B"], {}))
        contexts = [{"sql_context": TABLES}] * 2
        result = evaluate.load(str(ROOT / "task_metrics" / name)).compute(
            predictions=predictions, references=golds, contexts=contexts, settings=settings)
        direct = score_all(name, predictions, golds, contexts, settings)
        assert result["per_record"] == direct, name
        assert result["unparseable_rate"] == 0.5, name  # the second reply of each case has no answer in it


def test_a_summary_reply_with_no_words_scores_float_zeros_that_aggregate_keeps():
    from sft.metrics import aggregate, score_all

    scored = score_all("summary", ["!!! ...", "Ein Leitsatz."], ["Ein Leitsatz."] * 2, [{}, {}])
    assert scored[0]["rougeL"] == 0.0 and isinstance(scored[0]["rougeL"], float)
    assert aggregate(scored)["rougeL"] == 0.5


def test_error_rate_gives_partial_credit_in_the_declared_unit(tmp_path):
    from sft.metrics import error_rate, greater_is_better
    from sft.task import load_task

    # One symbol off in four: a quarter wrong, where exact match says all wrong.
    assert error_rate("a b c d", "a b c e", {}, unit="word") | {"answer": ""} == \
        {"error_rate": 0.25, "exact_match": 0.0, "unparseable": 0.0, "answer": ""}
    assert error_rate("abcd", "abce", {}, unit="char")["error_rate"] == 0.25
    assert error_rate("kitten", "sitting", {})["error_rate"] == pytest.approx(3 / 7, abs=1e-6)  # char by default
    assert error_rate(" a b ", "a b", {}, unit="word")["exact_match"] == 1.0
    assert error_rate("", "a b", {}, unit="word") | {"answer": ""} == \
        {"error_rate": 1.0, "exact_match": 0.0, "unparseable": 1.0, "answer": ""}
    long = error_rate("x" * 200_000, "abc", {})  # any reply: longer than the gold can exceed 1, never crashes
    assert long["error_rate"] > 1 and long["exact_match"] == 0.0
    assert not greater_is_better("error_rate") and not greater_is_better("eval_loss") and greater_is_better("acc")

    (tmp_path / "task.yaml").write_text("metric: error_rate\nunit: word\n")
    assert load_task(tmp_path).settings == {"unit": "word"}
    (tmp_path / "task.yaml").write_text("metric: error_rate\n")
    assert load_task(tmp_path).settings == {"unit": "char"}
    (tmp_path / "task.yaml").write_text("metric: error_rate\nunit: symbols\n")
    with pytest.raises(UserError, match=r"task.yaml: unit is 'symbols'; use char .* or word"):
        load_task(tmp_path)


def test_an_error_rate_is_scored_per_record_with_an_interval_and_improves_downwards():
    from sft.metrics import metric_named
    from sft.pairing import comparison
    from sft.scoring import scores
    from sft.task import Task

    golds = ["a b c d", "e f g h", "i j k l", "m n o p"]
    records = [{"completion": [{"role": "assistant", "content": g}], "references": {}} for g in golds]
    task = Task(metric="error_rate", settings={"unit": "word"})
    before = scores(task, ["a b c x", "e x x h", "i j k l", "x x x x"], records)
    after = scores(task, ["a b c d", "e f x h", "i j k x", "m n o p"], records)
    assert [r["error_rate"] for r in before.per_record] == [0.25, 0.5, 0.0, 1.0]
    f = before.figures
    assert f["error_rate"] == 0.4375 and f["error_rate_ci_low"] <= 0.4375 <= f["error_rate_ci_high"]
    pairs = [({"id": i, **b}, {"id": i, **a}) for i, (b, a) in enumerate(zip(before.per_record, after.per_record, strict=True))]
    figures, flips = comparison(pairs, metric_named("error_rate"))
    assert figures["greater_is_better"] is False and figures["difference"] == -0.3125
    assert flips == {"improved": [0, 1, 3], "regressed": [2]}  # a lower error rate is the better one
