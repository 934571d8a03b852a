"""Task metrics: one registry, chosen by name in prompts/<dataset>/task.yaml (never by dataset name).

A metric is one function, registered with @task_metric: it takes (prediction, gold, references)
for one record and returns a dict of per-record figures (floats), `unparseable` (1.0 when no
answer could be read from the reply, which then always counts as wrong) and `answer` (what was
read). `aggregate` averages them. The evaluate package reaches every registered metric through
task_metrics/<name>/<name>.py, a link to the one generic module task_metrics/task_metric.py.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from sft.params import UserError


@dataclass(frozen=True)
class TaskMetric:
    name: str
    score: Callable[[str, str, dict], dict]
    primary: str  # the headline figure: what select can pick by and compare tests
    binary: bool  # per-record 0/1: Wilson interval and McNemar; else bootstrap intervals
    labels: bool = False  # answers are letters: a confusion matrix is drawn

    @property
    def description(self) -> str:
        return (self.score.__doc__ or self.name).strip().splitlines()[0]


METRICS: dict[str, TaskMetric] = {}


def task_metric(name: str, primary: str, binary: bool, labels: bool = False):
    """Register the decorated scorer as the task metric `name`."""

    def register(score: Callable[[str, str, dict], dict]):
        METRICS[name] = TaskMetric(name, score, primary, binary, labels)
        return score

    return register

CODE_FENCE = re.compile(r"```(?:sql|sqlite)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
SQL_START = re.compile(r"\b(SELECT|WITH)\b", re.IGNORECASE)


def extract_sql(text: str) -> str:
    """The query in a model reply: a fenced block if any, else from the first SELECT/WITH to the
    first semicolon. A reply with no query gives ''."""
    fenced = CODE_FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    start = SQL_START.search(text)
    if not start:
        return ""
    query = text[start.start():]
    end = query.find(";")
    return (query[: end + 1] if end >= 0 else query).strip()


def normalize_sql(query: str) -> str:
    return re.sub(r"\s+", " ", query.strip().rstrip(";").strip()).lower()


def run_query(context: str, query: str, max_instructions: int = 1_000_000) -> list[tuple]:
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(context)
        # A runaway predicted query (a cross join of cross joins) must not stall evaluation:
        # the handler runs every 1,000 SQLite instructions and aborts the query past the limit.
        calls = itertools.count(1)
        db.set_progress_handler(lambda: next(calls) * 1000 > max_instructions, 1000)
        return db.execute(query).fetchall()
    finally:
        db.close()


def comparable(rows: list[tuple], ordered: bool) -> list:
    def norm(v):
        return round(v, 4) if isinstance(v, float) else v

    values = [tuple(norm(v) for v in row) for row in rows]
    return values if ordered else sorted(values, key=repr)


@task_metric("sql_execution", primary="execution_accuracy", binary=True)
def sql_execution(prediction: str, gold: str, references: dict) -> dict:
    """Execution match: gold and predicted queries give the same rows on the record's tables
    (in the same order only when the gold query orders them)."""
    query = extract_sql(prediction)
    context = references["sql_context"]
    try:
        expected = run_query(context, gold)
    except sqlite3.Error:
        expected = None  # gold SQL in another dialect (gretelai has some): judged by exact match only
    try:
        got = run_query(context, query) if query else None
    except sqlite3.Error:
        got = None
    ordered = "order by" in gold.lower()
    exact = normalize_sql(query) == normalize_sql(gold)
    if expected is None:
        correct = exact
    else:
        correct = got is not None and comparable(got, ordered) == comparable(expected, ordered)
    return {
        "execution_accuracy": float(correct),
        "exact_match": float(exact),
        "execution_error_rate": float(got is None),
        "unparseable": float(not query),
        "answer": query,
    }


ANSWER = re.compile(r"the answer is:?\s*\(?([A-J])\b\)?", re.IGNORECASE)


def answer_letter(text: str) -> str | None:
    """The letter of the last "the answer is (X)" in a reply; None when there is none."""
    found = ANSWER.findall(text)
    return found[-1].upper() if found else None


@task_metric("multiple_choice", primary="accuracy", binary=True, labels=True)
def multiple_choice(prediction: str, gold: str, references: dict) -> dict:
    """Accuracy of the answer letter. A reply without a parseable letter is wrong, always."""
    got, want = answer_letter(prediction), answer_letter(gold)
    return {"accuracy": float(got is not None and got == want), "unparseable": float(got is None),
            "answer": got or "none", "gold_answer": want or "none"}


WORD = re.compile(r"\w+")


class UnicodeWords:
    """rouge-score's own tokenizer keeps only [a-z0-9], which splits German words at every umlaut."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return WORD.findall(text.lower())


_rouge = None


@task_metric("summary", primary="rougeL", binary=False)
def rouge_and_chrf(prediction: str, gold: str, references: dict) -> dict:
    """ROUGE-1/2/L F1 (rouge-score, Unicode words) and chrF (sacrebleu, 0-1) against the gold text."""
    global _rouge
    import sacrebleu
    from rouge_score import rouge_scorer

    if _rouge is None:
        _rouge = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=UnicodeWords())
    text = prediction.strip()
    if not text:
        return {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0, "chrf": 0.0, "unparseable": 1.0, "answer": ""}
    scores = _rouge.score(gold, text)
    return {**{k: round(v.fmeasure, 6) for k, v in scores.items()},
            "chrf": round(sacrebleu.sentence_chrf(text, [gold]).score / 100, 6), "unparseable": 0.0, "answer": text}


def metric_named(name: str) -> TaskMetric:
    if name not in METRICS:
        raise UserError(f"task metric '{name}' is unknown; available: {sorted(METRICS)} "
                        "(set metric: in prompts/<dataset>/task.yaml)")
    return METRICS[name]


def figures(per_record: list[dict]) -> list[str]:
    return [k for k, v in per_record[0].items() if isinstance(v, float)] if per_record else []


def aggregate(per_record: list[dict]) -> dict:
    """Mean of every numeric per-record figure; `unparseable` becomes `unparseable_rate`."""
    means = {k: round(sum(r[k] for r in per_record) / len(per_record), 4) for k in figures(per_record)}
    if "unparseable" in means:
        means["unparseable_rate"] = means.pop("unparseable")
    return means


def score_all(name: str, predictions: list[str], golds: list[str], references: list[dict]) -> list[dict]:
    score = metric_named(name).score
    return [score(p, g, r) for p, g, r in zip(predictions, golds, references, strict=True)]
