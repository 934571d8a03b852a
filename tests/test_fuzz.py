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
            "json": {"fields": ["name"]}}
GOLDS = {"sql_execution": "SELECT name FROM t WHERE id = 1;", "multiple_choice": "... the answer is (B)",
         "answer_match": "so #### 42", "exact_match": "Paris", "json": '{"name": "a"}', "summary": "Ein Leitsatz."}


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
from sft.metrics import METRICS, score_all
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
                 "correct": sum(s[primary] == 1.0 for s in scored),
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
