"""Every registered task metric against a few thousand generated replies (random bytes, huge strings,
Unicode edge cases, SQL and JSON bombs): each record gets its figures or a `scoring_error`, in
bounded time and memory, and the run never raises."""

import json
import os
import random
import subprocess
import sys

from sft.metrics import METRICS, score_all

SQL_BOMBS = [
    "SELECT zeroblob(999999999);", "SELECT randomblob(2000000000);", "SELECT printf('%.*c', 2000000000, 'x');",
    "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r;",
    "SELECT * FROM " + ", ".join(f"t t{i}" for i in range(40)) + ";", "ATTACH DATABASE 'x.db' AS x;",
    "VACUUM INTO 'x.db';", "PRAGMA writable_schema = 1;", "SELECT load_extension('/tmp/x');",
    "SELECT replace(replace(replace(hex(zeroblob(100000)), '0', '00'), '0', '00'), '0', '00');",
    "CREATE TRIGGER g AFTER INSERT ON t BEGIN INSERT INTO t SELECT * FROM t; END; INSERT INTO t VALUES (1);",
]
EDGES = ["", "\x00", "\ud800", "\udfff", "\ufeff", "\u202e", "e\u0301" * 1000, "\U0001f600" * 1000, "\r\n" * 1000,
         "```", "```sql\n", "```json\n{", "[" * 100_000, "{\"a\":" * 50_000, "the answer is (", "####",
         "#### " + "9" * 100_000, "1e999999", "NaN", "-" * 100_000, "(" * 100_000 + "A" + ")" * 100_000]
CONTEXT = "CREATE TABLE t (id INTEGER, name TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b');"
SETTINGS = {"answer_match": {"answer": {"pattern": r"####\s*(-?[\d,]*\.?\d+)", "compare": "numeric"}},
            "json": {"fields": ["name"]}, "error_rate": {"unit": "char"}}
GOLDS = {"sql_execution": "SELECT name FROM t WHERE id = 1;", "multiple_choice": "... the answer is (B)",
         "answer_match": "so #### 42", "exact_match": "Paris", "json": '{"name": "a"}', "summary": "Ein Leitsatz.",
         "error_rate": "a b c d"}


def replies(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    made = [*SQL_BOMBS, *EDGES, "x" * 2_000_000]
    while len(made) < count:
        kind = rng.randrange(4)
        if kind == 0:  # random bytes, undecodable ones kept as lone surrogates
            made.append(rng.randbytes(rng.randrange(1, 400)).decode("utf-8", "surrogateescape"))
        elif kind == 1:  # random code points, any plane
            made.append("".join(chr(rng.choice([rng.randrange(0x20), rng.randrange(0x110000)]))
                                for _ in range(rng.randrange(1, 200))))
        else:  # pieces of bombs and edges glued together
            made.append(" ".join(rng.choice([*SQL_BOMBS, *EDGES[:12], "SELECT", ";", "'", "\"", "the answer is (C)"])
                                 for _ in range(rng.randrange(1, 6))))
    return made[:count]


PROBE = """
import json, sys, time
sys.setrecursionlimit(10_000)
from sft.metrics import METRICS, greater_is_better, score_all
from tests.test_fuzz import CONTEXT, GOLDS, SETTINGS, replies
made = replies(int(sys.argv[1]))
out = {}
for name in METRICS:
    start = time.perf_counter()
    scored = score_all(name, made, [GOLDS[name]] * len(made), [{"sql_context": CONTEXT}] * len(made),
                       SETTINGS.get(name))
    primary = METRICS[name].primary
    out[name] = {"seconds": time.perf_counter() - start, "records": len(scored),
                 "with_primary": sum(isinstance(s.get(primary), float) for s in scored),
                 "correct": sum(s[primary] == (1.0 if greater_is_better(primary) else 0.0) for s in scored),
                 "errors": sum(s.get("scoring_error", 0.0) for s in scored)}
from sft.device import peak_resident_bytes
out["peak_mb"] = peak_resident_bytes() / 2**20
print(json.dumps(out))
"""


def test_every_metric_scores_thousands_of_hostile_replies_in_bounded_time_and_memory():
    from conftest import ROOT

    count = 1000
    done = subprocess.run([sys.executable, "-c", PROBE, str(count)], cwd=ROOT, text=True, capture_output=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    print(json.dumps(out, indent=1))
    assert out.pop("peak_mb") < 1500
    assert set(out) == set(METRICS), "every registered metric is fuzzed"
    for name, figures in out.items():
        assert figures["records"] == figures["with_primary"] == count, (name, figures)
        assert figures["seconds"] < 240, (name, figures)
        # No generated reply is the gold, bar the few that happen to carry its answer.
        assert figures["correct"] < count * 0.05, (name, figures)


def test_a_record_whose_scoring_raises_is_counted_wrong_and_the_others_go_on(monkeypatch):
    metric = METRICS["exact_match"]

    def fragile(prediction, gold, references):
        if prediction == "boom":
            raise RuntimeError("a reply no scorer foresaw")
        return metric.score(prediction, gold, references)

    monkeypatch.setitem(METRICS, "exact_match", metric.__class__(**{**metric.__dict__, "score": fragile}))
    scored = score_all("exact_match", ["Paris", "boom", "Rome"], ["Paris"] * 3, [{}] * 3)
    assert [s["exact_match"] for s in scored] == [1.0, 0.0, 0.0]
    assert [s["scoring_error"] for s in scored] == [0.0, 1.0, 0.0]
    assert scored[1]["unparseable"] == 1.0 and set(scored[1]) == set(scored[0])


def test_records_that_all_score_carry_no_scoring_error_key():
    scored = score_all("exact_match", ["Paris"], ["Paris"], [{}])
    assert "scoring_error" not in scored[0]


# Records of every shape with a field swapped for a value of the wrong type, size or nesting: each is
# converted, or stops with one UserError naming the file and line, never another exception.
SHAPES = {
    "messages": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    "sharegpt": {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
    "prompt_completion": {"prompt": "q", "completion": "a"},
    "alpaca": {"instruction": "q", "input": "context", "output": "a"},
}


def deep(levels: int, leaf=1):
    for _ in range(levels):
        leaf = [leaf]
    return leaf


HOSTILE = [5, -1.5, True, None, [], {}, [5], ["q"], [None], [{"role": 5, "content": "x"}], [{"role": ["user"]}],
           [{"from": ["human"], "value": "q"}], [{"from": "human", "value": 5}], {"role": "user"}, "\ud800",
           "ok \udfff", ["\ud800"], deep(40), deep(20, "x"), 10**30, -(10**19), [10**25], float("nan"), "",
           " ", "x" * 1_000_000, [{"role": "assistant", "content": "a"}] * 3]
RAW_LINES = [b"[" * 200_000 + b"]" * 200_000, b'{"id": ' + b"9" * 5000 + b"}", b'{"prompt": "\\ud800", "completion": "a"}',
             b'{"prompt": NaN, "completion": Infinity}', b"\xff\xfe{}", b'{"a": ' * 200_000, b"5", b'"text"', b"null",
             b'{"\\udc80": 1, "prompt": "q", "completion": "a"}', b'{"id": [1, 2], "prompt": "q", "completion": "a"}',
             b'{"id": {"a": 1}, "prompt": "q", "completion": "a"}', b'{"id": 1e400, "prompt": "q", "completion": "a"}']


def hostile_records() -> list[tuple[str, bytes]]:
    made = []
    for shape, record in SHAPES.items():
        for key in [*record, "id"]:
            for value in HOSTILE:
                made.append((shape, json.dumps({**record, key: value}).encode()))
    return made + [(shape, raw) for shape in SHAPES for raw in RAW_LINES]


def test_records_of_every_shape_with_wrong_types_nesting_and_sizes_stop_in_one_line_naming_file_and_line(tmp_path):
    from sft import shapes, sources
    from sft.params import UserError

    outcomes = {"converted": 0, "refused": 0}
    for number, (shape, line) in enumerate(hostile_records(), 1):
        path = tmp_path / f"r{number}.jsonl"
        path.write_bytes(line + b"\n")
        try:
            for record in sources.load(str(path))["train"]:
                prompt, completion = shapes.non_empty(*shapes.CONVERTERS[shape](record.fields, record.where, None),
                                                      record.where)
                json.dumps([prompt, completion], ensure_ascii=False).encode("utf-8")  # what prepare writes
            outcomes["converted"] += 1
        except UserError as e:
            message = str(e)
            assert message.startswith(f"{path}:1: ") and "\n" not in message and len(message) < 600, (line[:80], message)
            outcomes["refused"] += 1
    print(outcomes)
    assert outcomes["refused"] > 0.8 * sum(outcomes.values())
    assert outcomes["converted"] >= len(SHAPES)  # the wrong-typed id of 5 and the like pass as they are
