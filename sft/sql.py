"""SQL in model replies, run on a record's own SQLite tables: a query is judged by the rows it
returns, a statement that changes data or schema by the state of the database it leaves.

Replies and the dataset's own SQL (its context and gold) come from outside, so every run is
bounded: instructions (a progress handler), the size of one value, of the database and of a
result, and SQLite's heap; ATTACH and pragmas other than table_info are refused (no file is
written or read), and a reply SQLite cannot take (a NUL byte, a lone surrogate) fails like any
wrong SQL."""

from __future__ import annotations

import itertools
import re
import sqlite3
import time

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
MAX_INSTRUCTIONS = 1_000_000  # a statement's, or a context's, SQLite instructions
# A backstop only: the instruction budget decides (the same on every machine), and passes in well
# under a second; the deadline catches a single instruction that runs long.
MAX_SECONDS = 10.0
LIMITS = {sqlite3.SQLITE_LIMIT_LENGTH: 1_000_000,  # bytes of one string, blob or row
          sqlite3.SQLITE_LIMIT_SQL_LENGTH: 1_000_000, sqlite3.SQLITE_LIMIT_ATTACHED: 0}
MAX_PAGES = 16_384  # of 4 KiB: a record's database stays under 64 MiB
MAX_RESULT_BYTES = 16 * 2**20
HEAP_LIMIT = 256 * 2**20  # SQLite's own allocations in this process (sorters, temp tables)
MAX_CUTS = 256  # semicolons tried when cutting a reply at its first complete statement
PRAGMAS = {"table_info"}
FUNCTIONS_REFUSED = {"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit"}  # files, native code
WRITES = {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE, sqlite3.SQLITE_ALTER_TABLE,
          sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_CREATE_INDEX, sqlite3.SQLITE_CREATE_VIEW,
          sqlite3.SQLITE_CREATE_TRIGGER, sqlite3.SQLITE_DROP_TABLE, sqlite3.SQLITE_DROP_INDEX,
          sqlite3.SQLITE_DROP_VIEW, sqlite3.SQLITE_DROP_TRIGGER}
FAILURES = (sqlite3.Error, sqlite3.Warning, ValueError, MemoryError, OverflowError)  # ValueError: NUL, surrogates


def unfenced(text: str) -> str:
    """The inside of the first ```sql fence (a reply's, or a gold written in one), else the text."""
    fenced = CODE_FENCE.search(text)
    return fenced.group(1).strip() if fenced else text


def extract_sql(text: str, changes: bool = False) -> str:
    """The SQL in a model reply: a fenced block if any, else from the first statement start to the
    first semicolon. Where the gold is a query, a statement starts at SELECT or WITH; where it
    changes data or schema, also at INSERT INTO, UPDATE ... SET, DELETE FROM, CREATE TABLE, ...
    A reply with no SQL gives ''."""
    text = unfenced(text)
    start = STARTS[changes].search(text)
    if not start:
        return ""
    return first_statement(text[start.start():]).strip()


def first_statement(text: str) -> str:
    """Up to the first semicolon that ends a complete statement (not one inside a string, a
    quoted name or a trigger's body), or all of `text` when none does."""
    cuts = (i for i, ch in enumerate(text) if ch == ";")
    try:
        for end in itertools.islice(cuts, MAX_CUTS):
            if sqlite3.complete_statement(text[: end + 1]):
                return text[: end + 1]
    except ValueError:  # a NUL byte or a lone surrogate: no SQLite statement; it fails when run
        pass
    return text


QUOTED_OR_PARENTHESIS = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|[()])""")


def orders_rows(query: str) -> bool:
    """Whether a query's own rows come in a set order: an ORDER BY outside every parenthesis and
    quote (not a window's, a subquery's or a string's)."""
    depth, outer = 0, []
    for part in QUOTED_OR_PARENTHESIS.split(query):
        if part in ("(", ")"):
            depth += 1 if part == "(" else -1
        elif depth == 0 and not part.startswith(("'", '"')):
            outer.append(part)
    return re.search(r"\border\s+by\b", " ".join(outer), re.IGNORECASE) is not None


def normalize_sql(query: str) -> str:
    return re.sub(r"\s+", " ", query.strip().rstrip(";").strip()).lower()


def changes_data(query: str, context: str = "") -> bool:
    """Whether a statement changes data or schema (judged by the state it leaves, not by rows).
    A statement that opens with WITH is asked of SQLite: what compiling it on the record's tables
    would write."""
    first = query.strip().split(None, 1)
    if not first or first[0].upper() != "WITH":
        return bool(first) and first[0].upper() in CHANGES
    writes = []
    try:
        db = database(context)
    except FAILURES:
        return False
    try:
        db.set_authorizer(authorizer(writes))
        db.execute("EXPLAIN " + first_statement(query))  # compiled, never run
    except FAILURES:
        return False
    finally:
        db.close()
    return any(action in WRITES for action in writes)


def authorizer(seen: list | None = None):
    """SQLite's authorizer: no ATTACH or DETACH (so no VACUUM INTO), no pragma but table_info, no
    function that reaches files or native code; `seen` collects the actions."""
    def authorize(action, arg1, arg2, name, source):
        if seen is not None:
            seen.append(action)
        refused = action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH) or (
            action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() not in PRAGMAS) or (
            action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in FUNCTIONS_REFUSED)
        return sqlite3.SQLITE_DENY if refused else sqlite3.SQLITE_OK
    return authorize


# SQLite 3.40's printf('%.Nc') writes its N characters one at a time, past the length limit, in
# one instruction (18 s for N = 2e9, beyond the progress handler's reach); format() is printf.
PRINTF_CHARS = re.compile(r"%[-+ #0,!]*(?:\d+|\*)?\.(\d+|\*)c")
_printer = None


def guarded_printf(name: str):
    """`name` (printf or format) as SQLite's own, run on a separate connection, refusing a %c whose
    repeat count is `*` or over the length limit."""
    def call(*args):
        global _printer
        if args and isinstance(args[0], str):
            for match in PRINTF_CHARS.finditer(args[0]):
                count = match.group(1)
                if count == "*" or len(count) > 7 or int(count) > LIMITS[sqlite3.SQLITE_LIMIT_LENGTH]:
                    raise sqlite3.DataError(f"{name}: a %c repeat count of {count[:20]} is refused")
        if _printer is None:
            _printer = sqlite3.connect(":memory:", check_same_thread=False)
            _printer.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, LIMITS[sqlite3.SQLITE_LIMIT_LENGTH])
        return _printer.execute(f"SELECT {name}({', '.join('?' * len(args))})", args).fetchone()[0]
    return call


def budget(db: sqlite3.Connection) -> None:
    """A fresh instruction budget: the handler runs every 1,000 SQLite instructions and aborts past
    the limit (or the deadline)."""
    calls, deadline = itertools.count(1), time.monotonic() + MAX_SECONDS
    db.set_progress_handler(lambda: next(calls) * 1000 > MAX_INSTRUCTIONS or time.monotonic() > deadline, 1000)


def database(context: str) -> sqlite3.Connection:
    """The record's tables in memory, bounded before the context runs: a runaway context or
    statement (a recursive CTE, a cross join of cross joins, a gigabyte zeroblob) fails instead of
    stalling or exhausting the machine."""
    db = sqlite3.connect(":memory:")
    try:
        for limit, value in LIMITS.items():
            db.setlimit(limit, value)
        for pragma in (f"hard_heap_limit = {HEAP_LIMIT}", f"max_page_count = {MAX_PAGES}", "temp_store = MEMORY"):
            db.execute(f"PRAGMA {pragma}")
        for name in ("printf", "format"):
            db.create_function(name, -1, guarded_printf(name), deterministic=True)
        db.set_authorizer(authorizer())
        budget(db)
        db.executescript(context)
        budget(db)
    except BaseException:
        db.close()
        raise
    return db


def bounded_rows(cursor: sqlite3.Cursor) -> list[tuple]:
    rows, size = [], 0
    for row in cursor:
        size += sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in row)
        if size > MAX_RESULT_BYTES:
            raise sqlite3.DataError(f"the result passed {MAX_RESULT_BYTES} bytes")
        rows.append(row)
    return rows


def run_query(context: str, query: str) -> list[tuple]:
    db = database(context)
    try:
        return bounded_rows(db.execute(query))
    finally:
        db.close()


def state_after(context: str, statement: str) -> dict:
    """Every table's columns and rows (in a fixed order), and the other schema objects, after
    `statement` ran on a fresh copy of the record's database."""
    db = database(context)
    try:
        db.executescript(statement)
        budget(db)
        schema = db.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                            "ORDER BY type, name").fetchall()
        tables = {}
        for kind, name in schema:
            if kind == "table":
                quoted = '"' + name.replace('"', '""') + '"'
                columns = [row[1].lower() for row in db.execute(f"PRAGMA table_info({quoted})")]
                tables[name.lower()] = (columns, comparable(bounded_rows(db.execute(f"SELECT * FROM {quoted}")), False))
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
    except FAILURES:
        return None


class Unscorable(Exception):
    """The record's own SQL (context or gold) passed a bound or was refused: no reply can be judged on it."""


# What SQLite says when a bound stops a statement or the authorizer refuses one; any other failure
# of the gold (a syntax error, an unknown function) is another dialect, judged by exact match.
BOUND_MESSAGES = re.compile(r"interrupted|not authorized|authorization denied|too big|out of memory|too many attached|"
                            r"database or disk is full|the result passed", re.IGNORECASE)


def gold_outcome(context: str, gold: str, ordered: bool, changes: bool):
    """The gold's outcome, None for a gold in another dialect; Unscorable where the context or the gold
    passed a bound or was refused (an endless CTE, ATTACH, VACUUM INTO, a gigabyte blob)."""
    try:
        return state_after(context, gold) if changes else comparable(run_query(context, gold), ordered)
    except MemoryError as e:
        raise Unscorable("the record's SQL ran out of its memory bound") from e
    except FAILURES as e:
        if BOUND_MESSAGES.search(str(e)):
            raise Unscorable(f"the record's SQL passed a bound or was refused: {str(e)[:200]}") from None
        return None
