"""SQL in model replies, run on a record's own SQLite tables: a query is judged by the rows it
returns, a statement that changes data or schema by the state of the database it leaves."""

from __future__ import annotations

import itertools
import re
import sqlite3

CODE_FENCE = re.compile(r"```(?:sql|sqlite)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
CHANGES = ("INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP", "REPLACE")
QUERY_START = r"SELECT|WITH"
# A statement that changes data or schema, in its SQL shape: the bare words ("create", "drop")
# are common in prose, and an echoed schema must not pass for an answer to a question.
CHANGE_START = (r"INSERT\s+INTO|REPLACE\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|"
                r"CREATE\s+(?:TEMP\s+|TEMPORARY\s+|UNIQUE\s+)?(?:TABLE|INDEX|VIEW|TRIGGER)|ALTER\s+TABLE|"
                r"DROP\s+(?:TABLE|INDEX|VIEW|TRIGGER)")
STARTS = {False: re.compile(rf"\b({QUERY_START})\b", re.IGNORECASE),
          True: re.compile(rf"\b({QUERY_START}|{CHANGE_START})\b", re.IGNORECASE)}
MAX_INSTRUCTIONS = 1_000_000


def extract_sql(text: str, changes: bool = False) -> str:
    """The SQL in a model reply: a fenced block if any, else from the first statement start to the
    first semicolon. Where the gold is a query, a statement starts at SELECT or WITH; where it
    changes data or schema, also at INSERT INTO, UPDATE ... SET, DELETE FROM, CREATE TABLE, ...
    A reply with no SQL gives ''."""
    fenced = CODE_FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    start = STARTS[changes].search(text)
    if not start:
        return ""
    query = text[start.start():]
    end = query.find(";")
    return (query[: end + 1] if end >= 0 else query).strip()


def normalize_sql(query: str) -> str:
    return re.sub(r"\s+", " ", query.strip().rstrip(";").strip()).lower()


def changes_data(query: str) -> bool:
    """Whether a statement changes data or schema (judged by the state it leaves, not by rows)."""
    first = query.strip().split(None, 1)
    return bool(first) and first[0].upper() in CHANGES


def database(context: str) -> sqlite3.Connection:
    """The record's tables in memory. A runaway statement (a cross join of cross joins) must not
    stall evaluation: the handler runs every 1,000 SQLite instructions and aborts past the limit."""
    db = sqlite3.connect(":memory:")
    db.executescript(context)
    calls = itertools.count(1)
    db.set_progress_handler(lambda: next(calls) * 1000 > MAX_INSTRUCTIONS, 1000)
    return db


def run_query(context: str, query: str) -> list[tuple]:
    db = database(context)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def state_after(context: str, statement: str) -> dict:
    """Every table's columns and rows (in a fixed order), and the other schema objects, after
    `statement` ran on a fresh copy of the record's database."""
    db = database(context)
    try:
        db.executescript(statement)
        schema = db.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                            "ORDER BY type, name").fetchall()
        tables = {}
        for kind, name in schema:
            if kind == "table":
                quoted = '"' + name.replace('"', '""') + '"'
                columns = [row[1].lower() for row in db.execute(f"PRAGMA table_info({quoted})")]
                tables[name.lower()] = (columns, comparable(db.execute(f"SELECT * FROM {quoted}").fetchall(), False))
        return {"tables": tables, "other": sorted((k, n.lower()) for k, n in schema if k != "table")}
    finally:
        db.close()


def comparable(rows: list[tuple], ordered: bool) -> list:
    def norm(v):
        return round(v, 4) if isinstance(v, float) else v

    values = [tuple(norm(v) for v in row) for row in rows]
    return values if ordered else sorted(values, key=repr)


def outcome(context: str, query: str, ordered: bool, changes: bool):
    """What a statement does on the record's database: its rows, or the state it leaves; None if it fails."""
    try:
        return state_after(context, query) if changes else comparable(run_query(context, query), ordered)
    except (sqlite3.Error, sqlite3.Warning):
        return None
