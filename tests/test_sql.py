"""The SQL scorer against hostile replies and hostile datasets: every reply is scored, in bounded
time and memory, nothing outside the record's in-memory database is touched, and statements are
cut and classified as SQLite parses them."""

import json
import sqlite3
import subprocess
import sys

import pytest
from conftest import ROOT

from sft import sql
from sft.metrics import score_all, sql_execution

TABLES = "CREATE TABLE t (id INTEGER, name TEXT, price REAL); INSERT INTO t VALUES (1, 'a;b', 2.0), (2, 'Mug', 3.5);"
ROWS = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r LIMIT 5000)"
HOSTILE = {  # reply: each would take gigabytes, or raise, without the bounds
    "a gigabyte zeroblob": "SELECT zeroblob(999999999) FROM t;",
    "20 MB values": "SELECT randomblob(20000000) FROM t;",
    "4.5 GB of rows": f"{ROWS} SELECT zeroblob(900000) FROM r;",
    "4.5 GB sorted": f"{ROWS} SELECT zeroblob(900000) AS z FROM r ORDER BY random();",
    "4.5 GB inserted": f"INSERT INTO t SELECT 1, zeroblob(900000), 1 FROM ({ROWS} SELECT i FROM r);",
    "a NUL byte": "UPDATE t SET name = 'x\x00y';",
    "a lone surrogate": "UPDATE t SET name = '\ud800';",
    "a %c written 2e9 times": "SELECT printf('%.*c', 2000000000, 'x') FROM t;",
    "the same through format": "SELECT format('%.2000000000c', 'x') FROM t;",
    "a runaway join": "SELECT count(*) FROM " + ", ".join(f"t t{i}" for i in range(30)) + ";",
}

PROBE = """
import json, sys, time
from sft.metrics import sql_execution
cases, tables = json.loads(sys.stdin.read())
out = {}
for name, reply in cases.items():
    gold = "UPDATE t SET price = 1;" if reply.lstrip().startswith(("UPDATE", "INSERT")) else "SELECT name FROM t;"
    start = time.perf_counter()
    scored = sql_execution(reply, gold, {"sql_context": tables})
    out[name] = [scored["execution_accuracy"], scored["execution_error_rate"], time.perf_counter() - start]
from sft.device import peak_resident_bytes
out["peak_mb"] = peak_resident_bytes() / 2**20
print(json.dumps(out))
"""


def test_a_probe_reports_its_own_peak_memory_not_its_parents():
    # CI's first red: ru_maxrss carries the parent's peak across exec, so a probe run by a pytest
    # worker that had peaked at 1.4 GB "used" 1.4 GB.
    parent = ("import subprocess, sys\nheld = bytearray(600 * 2**20)\nfor i in range(0, len(held), 4096): held[i] = 1\n"
              "del held\nchild = 'from sft.device import peak_resident_bytes; print(peak_resident_bytes() / 2**20)'\n"
              "print(subprocess.run([sys.executable, '-c', child], capture_output=True, text=True, check=True).stdout)")
    done = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout) < 100


def test_hostile_replies_are_scored_wrong_in_bounded_time_and_memory():
    # A fresh process with a bare environment, so that its peak memory is the scorer's alone.
    done = subprocess.run([sys.executable, "-c", PROBE], input=json.dumps([HOSTILE, TABLES]), text=True,
                          capture_output=True, timeout=120, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out.pop("peak_mb") < 400, out  # SQLite's heap is capped at 256 MiB, a result at 16 MiB
    for name, (accuracy, error, seconds) in out.items():
        assert (accuracy, error) == (0.0, 1.0), name
        assert seconds < 10, name


@pytest.mark.parametrize("context", [
    TABLES + "ATTACH DATABASE '{path}' AS y; CREATE TABLE y.z (a);",
    TABLES + "VACUUM INTO '{path}';",
])
def test_the_datasets_own_sql_writes_no_file(context, tmp_path):
    path = tmp_path / "written.db"
    # The record's database cannot be built: it is unscorable (counted as a scoring_error), not judged
    # by exact match as a gold in another dialect would be.
    with pytest.raises(sql.Unscorable, match="passed a bound or was refused: (not authorized|authorization denied)"):
        sql_execution("SELECT name FROM t;", "SELECT name FROM t;", {"sql_context": context.format(path=path)})
    assert not path.exists()
    [scored] = score_all("sql_execution", ["SELECT name FROM t;"], ["SELECT name FROM t;"],
                         [{"sql_context": context.format(path=path)}])
    assert scored["execution_accuracy"] == 0.0 and scored["scoring_error"] == 1.0 and not path.exists()
    reply = sql_execution(f"ATTACH DATABASE '{path}' AS y;", "CREATE TABLE u (a);", {"sql_context": TABLES})
    assert not path.exists() and reply["execution_error_rate"] == 1.0


def test_a_context_that_never_ends_is_stopped_by_the_budget():
    context = TABLES + "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r;"
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        sql.database(context)


def test_a_gold_over_the_budget_is_unscorable_not_an_exact_match():
    """Only a gold SQLite cannot parse or run (another dialect) falls back to exact match; one stopped
    by a bound would otherwise score a copy of itself correct and anything else wrong, silently."""
    endless = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r;"
    [scored] = score_all("sql_execution", [endless], [endless], [{"sql_context": TABLES}])
    assert scored["execution_accuracy"] == 0.0 and scored["scoring_error"] == 1.0
    dialect = "SELECT name FROM t WHERE name ILIKE 'm%';"  # PostgreSQL's ILIKE: a syntax error here
    [scored] = score_all("sql_execution", [dialect], [dialect], [{"sql_context": TABLES}])
    assert scored["execution_accuracy"] == 1.0 and "scoring_error" not in scored


def test_a_pragma_other_than_table_info_is_refused():
    assert sql.outcome(TABLES, "PRAGMA journal_mode = WAL;", False, True) is None
    assert sql.outcome(TABLES, "SELECT name FROM t;", False, False) == [("Mug",), ("a;b",)]


@pytest.mark.parametrize("reply, statement", [
    ("SELECT name FROM t WHERE name = 'a;b'; -- the one", "SELECT name FROM t WHERE name = 'a;b';"),
    ('SELECT "odd;name" FROM t; SELECT 2;', 'SELECT "odd;name" FROM t;'),
    ("CREATE TRIGGER g AFTER UPDATE ON t BEGIN UPDATE t SET price = 0; END; and more",
     "CREATE TRIGGER g AFTER UPDATE ON t BEGIN UPDATE t SET price = 0; END;"),
    ("SELECT '" + ";" * 1000 + "' FROM t", "SELECT '" + ";" * 1000 + "' FROM t"),  # no end: all of it
])
def test_a_reply_is_cut_after_its_first_complete_statement(reply, statement):
    assert sql.extract_sql(reply, changes=True) == statement


def test_a_correct_reply_with_a_semicolon_in_a_string_scores():
    gold = "SELECT id FROM t WHERE name = 'a;b';"
    assert sql_execution("```sql\nSELECT id FROM t WHERE name = 'a;b';\n```", gold,
                         {"sql_context": TABLES})["execution_accuracy"] == 1.0


def test_a_gold_that_opens_with_with_and_inserts_is_judged_by_the_state_it_leaves():
    gold = "WITH x AS (SELECT 3) INSERT INTO t SELECT 9, 'z', 1 FROM x;"
    assert sql.changes_data(gold, TABLES) and not sql.changes_data(f"{ROWS} SELECT i FROM r;", TABLES)
    assert sql_execution("SELECT * FROM t WHERE 0;", gold, {"sql_context": TABLES})["execution_accuracy"] == 0.0
    assert sql_execution(gold, gold, {"sql_context": TABLES})["execution_accuracy"] == 1.0


@pytest.mark.parametrize("gold, ordered", [
    ("SELECT name FROM t ORDER BY price DESC;", True),
    ("SELECT name, rank() OVER (ORDER BY price) FROM t;", False),  # the window's order, not the rows'
    ("SELECT name FROM (SELECT * FROM t ORDER BY id) WHERE price > 1;", False),
    ("SELECT name FROM t WHERE name = 'order by';", False),
    ("SELECT name, rank() OVER (ORDER BY price) AS r FROM t ORDER BY r;", True),
])
def test_rows_are_compared_in_order_only_when_the_gold_orders_its_own_rows(gold, ordered):
    assert sql.orders_rows(gold) is ordered


def test_a_window_functions_gold_does_not_demand_an_order():
    gold = "SELECT name, rank() OVER (ORDER BY price) FROM t;"
    reply = "SELECT name, rank() OVER (ORDER BY price) FROM t ORDER BY name DESC;"
    assert sql_execution(reply, gold, {"sql_context": TABLES})["execution_accuracy"] == 1.0


def test_printf_and_format_still_work_as_sqlites_own():
    tables = "CREATE TABLE t (id INTEGER, name TEXT); INSERT INTO t VALUES (1, 'a');"
    gold = "SELECT name || '-' || id || '.' FROM t;"
    for reply in ("SELECT printf('%s-%d.', name, id) FROM t;", "SELECT format('%s-%d%.1c', name, id, '.') FROM t;"):
        assert sql_execution(reply, gold, {"sql_context": tables})["execution_accuracy"] == 1.0, reply
