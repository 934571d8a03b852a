"""Task metrics: one registry, chosen by name in prompts/<dataset>/task.yaml (never by dataset name).

A metric is one function, registered with @task_metric: it takes (prediction, gold, references,
**settings) for one record and returns a dict of per-record figures (floats), `unparseable` (1.0
when no answer could be read from the reply, which then always counts as wrong) and `answer`
(what was read). `settings` are the task.yaml keys the metric declares (answer_match's `answer:`,
json's `fields:`), checked when prepare loads task.yaml. `aggregate` averages the figures. The
evaluate package reaches every registered metric through task_metrics/<name>/<name>.py, a link
to the one generic module task_metrics/task_metric.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from sft import answers, sql
from sft.params import UserError


@dataclass(frozen=True)
class TaskMetric:
    name: str
    score: Callable[..., dict]
    primary: str  # the headline figure: what select can pick by and compare tests
    binary: bool  # per-record 0/1: Wilson interval and McNemar; else bootstrap intervals
    labels: bool = False  # answers are letters: a confusion matrix is drawn
    settings: tuple[str, ...] = ()  # task.yaml keys the metric reads, passed to score as keywords
    check: Callable[[dict, str], dict] | None = None  # (settings, where) -> settings, or a UserError
    gold_readable: Callable[..., bool] | None = None  # (gold, references, **settings): an answer is in the gold

    @property
    def description(self) -> str:
        return (self.score.__doc__ or self.name).strip().splitlines()[0]


METRICS: dict[str, TaskMetric] = {}


def task_metric(name: str, primary: str, binary: bool, **options):
    """Register the decorated scorer as the task metric `name`."""

    def register(score: Callable[..., dict]):
        METRICS[name] = TaskMetric(name, score, primary, binary, **options)
        return score

    return register


def metric_named(name: str) -> TaskMetric:
    if name not in METRICS:
        raise UserError(f"task metric '{name}' is unknown; available: {sorted(METRICS)} "
                        "(set metric: in prompts/<dataset>/task.yaml)")
    return METRICS[name]


@task_metric("sql_execution", primary="execution_accuracy", binary=True)
def sql_execution(prediction: str, gold: str, references: dict) -> dict:
    """Execution match on the record's SQLite tables: a query returns the gold query's rows (in the
    same order only when the gold orders them); a statement that changes data or schema leaves the
    database as the gold statement does. Reply and gold may each be in a ```sql fence."""
    context = references["sql_context"]
    gold = sql.unfenced(gold)  # a gold written in a ```sql fence, as the text-to-sql preset's template writes it
    changes = sql.changes_data(gold, context)
    query = sql.extract_sql(prediction, changes)
    ordered = sql.orders_rows(gold)
    expected = sql.gold_outcome(context, gold, ordered, changes)  # Unscorable: counted as a scoring_error
    got = sql.outcome(context, query, ordered, changes) if query else None
    exact = sql.normalize_sql(query) == sql.normalize_sql(gold)
    # Gold SQL in another dialect (gretelai has some) cannot run here: judged by exact match only.
    correct = exact if expected is None else got is not None and got == expected
    return {
        "execution_accuracy": float(correct),
        "exact_match": float(exact),
        "execution_error_rate": float(got is None),
        "unparseable": float(not query),
        "answer": query,
    }


@task_metric("multiple_choice", primary="accuracy", binary=True, labels=True)
def multiple_choice(prediction: str, gold: str, references: dict) -> dict:
    """Accuracy of the letter in the last "the answer is (X)"; a reply without one is wrong."""
    got, want = answers.answer_letter(prediction), answers.answer_letter(gold)
    return {"accuracy": float(got is not None and got == want), "unparseable": float(got is None),
            "answer": got or "none", "gold_answer": want or "none"}


ANSWER_KEYS = ("pattern", "compare", "field")


def checked_answer(settings: dict, where: str) -> dict:
    answer = settings.get("answer")
    if not isinstance(answer, dict) or "pattern" not in answer:
        raise UserError(f"{where}: metric answer_match needs an `answer:` block with a `pattern:` (a regex whose "
                        r"first group is the answer, e.g. '####\s*(-?[\d,]*\.?\d+)') and a `compare:`")
    unknown = sorted(set(answer) - set(ANSWER_KEYS))
    if unknown:
        raise UserError(f"{where}: answer: unknown keys {unknown}; valid: {', '.join(ANSWER_KEYS)}")
    answers.compiled(answer["pattern"], where)
    if answer.get("field") is not None and not (isinstance(answer["field"], str) and answer["field"]):
        raise UserError(f"{where}: answer.field is {answer['field']!r}; it must name one record field, or be left out")
    compare = answer.setdefault("compare", "exact")
    if compare not in answers.COMPARES:
        raise UserError(f"{where}: answer.compare is {compare!r}; use one of {', '.join(answers.COMPARES)}")
    return settings


def expected_answer(gold: str, references: dict, answer: dict) -> str | None:
    if answer.get("field"):
        value = references.get(answer["field"])
        return None if value is None else str(value)
    return answers.captured(answers.compiled(answer["pattern"], "task.json"), gold)


@task_metric("answer_match", primary="accuracy", binary=True, settings=("answer",), check=checked_answer,
             gold_readable=lambda gold, references, answer: expected_answer(gold, references, answer) is not None)
def answer_match(prediction: str, gold: str, references: dict, answer: dict) -> dict:
    """Accuracy of the answer a declared pattern captures (its first group, the last match in a
    reply), against the gold completion's (or a record field's), compared exactly, normalized or
    as numbers."""
    got = answers.captured(answers.compiled(answer["pattern"], "task.json"), prediction)
    want = expected_answer(gold, references, answer)
    correct = got is not None and want is not None and answers.same(got, want, answer.get("compare", "exact"))
    return {"accuracy": float(correct), "unparseable": float(got is None), "answer": got or "",
            "expected": want or ""}


@task_metric("exact_match", primary="exact_match", binary=True)
def exact_match(prediction: str, gold: str, references: dict) -> dict:
    """The whole reply equals the gold completion, case, spaces and punctuation aside."""
    text = prediction.strip()
    return {"exact_match": float(bool(text) and answers.normalized(text) == answers.normalized(gold)),
            "unparseable": float(not text), "answer": text}


JSON_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def parsed_json(text: str):
    fenced = JSON_FENCE.search(text)
    try:
        return json.loads(fenced.group(1) if fenced else text.strip())
    except (ValueError, RecursionError):  # not JSON, or nested past Python's stack: no answer
        return None


def checked_fields(settings: dict, where: str) -> dict:
    fields = settings.get("fields")
    if fields is not None and not (isinstance(fields, list) and all(isinstance(f, str) for f in fields)):
        raise UserError(f"{where}: fields is {fields!r}; list the JSON keys to compare, e.g. fields: [name, year]")
    return settings


@task_metric("json", primary="json_match", binary=True, settings=("fields",), check=checked_fields)
def json_reply(prediction: str, gold: str, references: dict, fields: list[str] | None = None) -> dict:
    """The reply parses as JSON (a fenced ```json block or the whole reply); with `fields:`, those
    keys also equal the gold's."""
    got, want = parsed_json(prediction), parsed_json(gold)
    valid = got is not None
    if fields:
        matched = valid and isinstance(got, dict) and isinstance(want, dict) and \
            all(f in got and got.get(f) == want.get(f) for f in fields)
    else:
        matched = valid
    return {"json_match": float(matched), "valid_json": float(valid), "unparseable": float(not valid),
            "answer": prediction.strip()}


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
    # rouge-score gives an int 0 when either side has no words; figures are floats (aggregate reads them).
    return {**{k: float(round(v.fmeasure, 6)) for k, v in scores.items()},
            "chrf": round(sacrebleu.sentence_chrf(text, [gold]).score / 100, 6), "unparseable": 0.0, "answer": text}


UNITS = ("char", "word")  # jiwer's character and word error rates; a word is a run without spaces


def checked_unit(settings: dict, where: str) -> dict:
    unit = settings.setdefault("unit", "char")
    if unit not in UNITS:
        raise UserError(f"{where}: unit is {unit!r}; use char (character error rate) or word (word error rate: the "
                        "reply and gold split at spaces, e.g. a sequence of symbols written with spaces)")
    return settings


@task_metric("error_rate", primary="error_rate", binary=False, settings=("unit",), check=checked_unit,
             gold_readable=lambda gold, references, unit: bool(gold.strip()))
def error_rate(prediction: str, gold: str, references: dict, unit: str = "char") -> dict:
    """Edit distance to the gold completion over its length (jiwer's character or word error rate,
    as `unit:` declares): partial credit where exact match is too harsh; lower is better, and a
    reply longer than the gold can exceed 1. exact_match beside it."""
    import jiwer

    text = prediction.strip()
    rate = (jiwer.cer if unit == "char" else jiwer.wer)(gold.strip(), text) if text else 1.0
    return {"error_rate": round(float(rate), 6), "exact_match": float(text == gold.strip()),
            "unparseable": float(not text), "answer": text}


# A figure named so is better when lower (a loss, an error rate); any other, when higher. select,
# compare's flips, the sweep report and the card all read direction from this one rule.
LOWER_IS_BETTER = ("loss", "error_rate")


def greater_is_better(figure: str) -> bool:
    return not figure.endswith(LOWER_IS_BETTER)


def figures(per_record: list[dict]) -> list[str]:
    return [k for k, v in per_record[0].items() if isinstance(v, float)] if per_record else []


def aggregate(per_record: list[dict]) -> dict:
    """Mean of every numeric per-record figure; `unparseable` becomes `unparseable_rate`."""
    means = {k: round(sum(r[k] for r in per_record) / len(per_record), 4) for k in figures(per_record)}
    if "unparseable" in means:
        means["unparseable_rate"] = means.pop("unparseable")
    return means


def score_all(name: str, predictions: list[str], golds: list[str], references: list[dict],
              settings: dict | None = None) -> list[dict]:
    """Every record's figures. A record whose scoring fails (a reply no scorer foresaw) scores 0 on
    every figure, counts as unparseable and is marked `scoring_error`; the others go on."""
    metric = metric_named(name)
    scored = [scored_or_error(metric, p, g, r, settings or {})
              for p, g, r in zip(predictions, golds, references, strict=True)]
    if not any(isinstance(s, Exception) for s in scored):
        return scored
    errors = [s for s in scored if isinstance(s, Exception)]
    print(f"[metrics] {name}: {len(errors)} of {len(scored)} records could not be scored (first: "
          f"{type(errors[0]).__name__}: {str(errors[0])[:200]!r}); counted wrong, as scoring_error", flush=True)
    keys = next((s for s in scored if not isinstance(s, Exception)), {metric.primary: 0.0})
    failed = {k: (0.0 if isinstance(v, float) else "") for k, v in keys.items()} | {"unparseable": 1.0}
    return [{**failed, "scoring_error": 1.0} if isinstance(s, Exception) else {**s, "scoring_error": 0.0}
            for s in scored]


def scored_or_error(metric: TaskMetric, prediction: str, gold: str, references: dict, settings: dict):
    try:
        return metric.score(prediction, gold, references, **settings)
    except Exception as error:  # noqa: BLE001 - any reply, any bytes: one record fails, never the stage
        return error
