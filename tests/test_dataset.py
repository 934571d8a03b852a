"""The embedded text-to-SQL dataset: its size, variety, and that every gold query runs."""

import json
import sqlite3
import subprocess
import sys

from conftest import ROOT

DATA = ROOT / "data" / "raw" / "sql"
COLUMNS = {"id", "domain", "sql_complexity", "sql_task_type", "sql_prompt", "sql_context", "sql"}


def split(name):
    return [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines()]


def test_sizes_columns_and_variety():
    splits = {name: split(name) for name in ("train", "validation", "test")}
    assert len(splits["train"]) >= 1000 and len(splits["validation"]) >= 100 and len(splits["test"]) >= 200
    records = [r for rows in splits.values() for r in rows]
    assert all(set(r) == COLUMNS for r in records)
    assert len({r["domain"] for r in records}) >= 12
    for shape in ("WHERE", "COUNT(", "AVG(", "SUM(", "GROUP BY", "ORDER BY", "LIMIT", "JOIN", "BETWEEN", "LIKE"):
        assert sum(shape in r["sql"] for r in splits["test"]) >= 3, shape


def test_every_gold_query_runs_and_returns_rows():
    for name in ("train", "validation", "test"):
        for r in split(name):
            db = sqlite3.connect(":memory:")
            db.executescript(r["sql_context"])
            assert db.execute(r["sql"]).fetchall(), (name, r["id"])


def test_no_prompt_in_two_splits():
    seen = {}
    for name in ("train", "validation", "test"):
        for r in split(name):
            key = (r["sql_context"], r["sql_prompt"])
            assert key not in seen, (name, seen.get(key))
            seen[key] = name


def test_generator_reproduces_the_committed_files(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "data" / "generate_sql.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for name in ("train", "validation", "test"):
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (DATA / f"{name}.jsonl").read_bytes()
