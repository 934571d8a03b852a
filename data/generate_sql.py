"""Generate the embedded text-to-SQL dataset (schema of gretelai/synthetic_text_to_sql).

    python data/generate_sql.py --out data/raw/sql --seed 1234

Writes train.jsonl, validation.jsonl and test.jsonl with the columns `id`, `domain`,
`sql_complexity`, `sql_task_type`, `sql_prompt`, `sql_context` (CREATE TABLE and INSERT
statements) and `sql`. Every gold query is executed on SQLite before it is kept, and no
(`sql_context`, `sql_prompt`) pair appears in two splits. The same seed gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
from dataclasses import dataclass

# Names are drawn from these pools. Tables are small and types short (TEXT, INT, REAL) so a
# rendered record stays near 130 tokens: the context, not the query, is what costs CPU time.
FIRST = ["Ana", "Ben", "Carla", "Dev", "Elif", "Farid", "Gus", "Hana", "Ivan", "Jin", "Kofi",
         "Lena", "Mia", "Nour", "Omar", "Pia", "Raj", "Sara", "Tom", "Uma", "Vik", "Wen", "Yara", "Zoe"]


@dataclass(frozen=True)
class Col:
    name: str
    label: str  # how a question names the column
    kind: str  # "text", "cat", "int", "real"
    pool: tuple = ()  # values for "cat" and "text"
    lo: float = 0
    hi: float = 0


@dataclass(frozen=True)
class Table:
    name: str
    singular: str
    plural: str
    key: Col  # the column a question lists (a name or title)
    cat: Col
    num: Col
    num2: Col


@dataclass(frozen=True)
class Theme:
    domain: str
    main: Table
    child: str  # child table name; it has <main.singular>_id, one "text" column and one number
    child_plural: str
    child_key: Col
    child_num: Col


def people(label="name"):
    return Col("name", label, "text", tuple(FIRST))


THEMES = [
    Theme("human resources",
          Table("employees", "employee", "employees", people(),
                Col("department", "department", "cat", ("Sales", "IT", "Finance", "Legal", "HR")),
                Col("salary_k", "salary in thousands", "int", lo=30, hi=120),
                Col("years", "years of service", "int", lo=1, hi=30)),
          "trainings", "trainings", Col("course", "course", "cat", ("Safety", "Excel", "Ethics", "Python")),
          Col("hours", "training hours", "int", lo=2, hi=40)),
    Theme("retail",
          Table("products", "product", "products",
                Col("name", "name", "text", ("Lamp", "Desk", "Chair", "Mug", "Pen", "Sofa", "Rug", "Clock", "Shelf", "Vase")),
                Col("category", "category", "cat", ("Home", "Office", "Kitchen", "Garden")),
                Col("price", "price", "real", lo=2, hi=500),
                Col("stock", "stock", "int", lo=0, hi=300)),
          "sales", "sales", Col("region", "region", "cat", ("North", "South", "East", "West")),
          Col("quantity", "quantity sold", "int", lo=1, hi=50)),
    Theme("healthcare",
          Table("patients", "patient", "patients", people(),
                Col("ward", "ward", "cat", ("Cardiology", "Oncology", "Pediatrics", "Surgery")),
                Col("age", "age", "int", lo=1, hi=95),
                Col("stay_days", "length of stay in days", "int", lo=1, hi=60)),
          "visits", "visits", Col("doctor", "doctor", "cat", ("Dr. Lee", "Dr. Kim", "Dr. Roy", "Dr. Diaz")),
          Col("cost", "visit cost", "int", lo=50, hi=900)),
    Theme("education",
          Table("students", "student", "students", people(),
                Col("major", "major", "cat", ("Math", "Biology", "History", "Physics", "Art")),
                Col("gpa", "GPA", "real", lo=1.5, hi=4.0),
                Col("credits", "credits", "int", lo=10, hi=140)),
          "enrollments", "enrollments", Col("course", "course", "cat", ("Calculus", "Ecology", "Optics", "Drawing")),
          Col("grade", "grade", "int", lo=40, hi=100)),
    Theme("music",
          Table("artists", "artist", "artists",
                Col("name", "name", "text", ("Nova", "Echo", "Lumen", "Vesper", "Orbit", "Juno", "Atlas", "Indigo")),
                Col("genre", "genre", "cat", ("Jazz", "Rock", "Pop", "Folk", "Soul")),
                Col("followers_k", "followers in thousands", "int", lo=1, hi=900),
                Col("albums", "number of albums", "int", lo=1, hi=20)),
          "songs", "songs", Col("title", "song title", "cat", ("Rain", "Gold", "Drift", "Home", "Fire")),
          Col("streams_k", "streams in thousands", "int", lo=1, hi=500)),
    Theme("transportation",
          Table("vehicles", "vehicle", "vehicles",
                Col("model", "model", "text", ("Falcon", "Comet", "Ranger", "Breeze", "Titan", "Swift", "Pulse", "Astra")),
                Col("type", "type", "cat", ("Bus", "Tram", "Truck", "Van")),
                Col("mileage_k", "mileage in thousands", "int", lo=1, hi=300),
                Col("seats", "number of seats", "int", lo=2, hi=80)),
          "trips", "trips", Col("route", "route", "cat", ("R1", "R2", "R3", "R4")),
          Col("distance", "trip distance", "real", lo=1, hi=400)),
    Theme("energy",
          Table("power_plants", "power plant", "power plants",
                Col("name", "name", "text", ("Sunfield", "Windy Ridge", "Riverdam", "Coalport", "Geo One", "Tideway")),
                Col("source", "energy source", "cat", ("Solar", "Wind", "Hydro", "Coal", "Geothermal")),
                Col("capacity", "capacity in MW", "real", lo=5, hi=2000),
                Col("built_year", "year built", "int", lo=1960, hi=2024)),
          "outputs", "outputs", Col("month", "month", "cat", ("Jan", "Feb", "Mar", "Apr")),
          Col("energy_gwh", "energy produced in GWh", "real", lo=0.1, hi=90)),
    Theme("agriculture",
          Table("farms", "farm", "farms",
                Col("name", "name", "text", ("Green Acre", "Oak Hill", "Sunny Vale", "Red Barn", "Clearwater", "Maple")),
                Col("crop", "main crop", "cat", ("Wheat", "Corn", "Rice", "Soy", "Barley")),
                Col("area", "area in hectares", "real", lo=5, hi=900),
                Col("workers", "number of workers", "int", lo=1, hi=60)),
          "harvests", "harvests", Col("season", "season", "cat", ("Spring", "Summer", "Autumn")),
          Col("yield_tons", "yield in tons", "real", lo=1, hi=800)),
    Theme("finance",
          Table("accounts", "account", "accounts", people("owner", ),
                Col("branch", "branch", "cat", ("Downtown", "Airport", "Harbor", "Uptown")),
                Col("balance", "balance", "int", lo=0, hi=9000),
                Col("age_years", "account age in years", "int", lo=0, hi=40)),
          "transactions", "transactions", Col("kind", "transaction type", "cat", ("Deposit", "Withdrawal", "Transfer")),
          Col("amount", "amount", "int", lo=5, hi=900)),
    Theme("hospitality",
          Table("hotels", "hotel", "hotels",
                Col("name", "name", "text", ("Palm Inn", "Sea View", "Alpine", "Grand", "City Lodge", "Royal", "Harbor")),
                Col("city", "city", "cat", ("Paris", "Rome", "Lisbon", "Oslo", "Madrid")),
                Col("rating", "rating", "real", lo=1, hi=5),
                Col("rooms", "number of rooms", "int", lo=10, hi=600)),
          "bookings", "bookings", Col("channel", "booking channel", "cat", ("Online", "Phone", "Agency")),
          Col("nights", "number of nights", "int", lo=1, hi=21)),
    Theme("environment",
          Table("stations", "monitoring station", "monitoring stations",
                Col("name", "name", "text", ("Alpha", "Bravo", "Delta", "Kilo", "Lima", "Sierra", "Tango")),
                Col("country", "country", "cat", ("Kenya", "Chile", "India", "Norway", "Peru")),
                Col("pm25", "PM2.5 level", "real", lo=1, hi=150),
                Col("elevation", "elevation", "int", lo=0, hi=4000)),
          "readings", "readings", Col("pollutant", "pollutant", "cat", ("NO2", "O3", "CO", "SO2")),
          Col("level", "level", "real", lo=0.1, hi=300)),
    Theme("sports",
          Table("players", "player", "players", people(),
                Col("team", "team", "cat", ("Lions", "Hawks", "Bears", "Wolves", "Sharks")),
                Col("goals", "goals", "int", lo=0, hi=60),
                Col("age", "age", "int", lo=17, hi=40)),
          "matches", "matches", Col("opponent", "opponent", "cat", ("Tigers", "Eagles", "Foxes", "Owls")),
          Col("minutes", "minutes played", "int", lo=1, hi=90)),
    Theme("logistics",
          Table("warehouses", "warehouse", "warehouses",
                Col("name", "name", "text", ("Depot A", "Depot B", "Hub North", "Hub South", "Dock 7", "Yard 3")),
                Col("region", "region", "cat", ("Europe", "Asia", "Africa", "Americas")),
                Col("capacity", "capacity", "int", lo=50, hi=5000),
                Col("staff", "number of staff", "int", lo=3, hi=300)),
          "shipments", "shipments", Col("carrier", "carrier", "cat", ("FastShip", "BlueLine", "CargoX")),
          Col("weight", "shipment weight", "int", lo=1, hi=900)),
    Theme("real estate",
          Table("properties", "property", "properties",
                Col("address", "address", "text", ("1 Elm St", "2 Oak Ave", "3 Pine Rd", "4 Lake Dr", "5 Hill Ln", "6 Bay Ct")),
                Col("city", "city", "cat", ("Austin", "Denver", "Boston", "Seattle")),
                Col("price_k", "price in thousands", "int", lo=90, hi=2000),
                Col("bedrooms", "number of bedrooms", "int", lo=1, hi=7)),
          "inspections", "inspections", Col("inspector", "inspector", "cat", ("Avery", "Blake", "Casey", "Drew")),
          Col("score", "inspection score", "int", lo=40, hi=100)),
    Theme("cybersecurity",
          Table("servers", "server", "servers",
                Col("hostname", "hostname", "text", ("web01", "web02", "db01", "db02", "cache1", "mail1", "api01")),
                Col("os", "operating system", "cat", ("Linux", "Windows", "BSD")),
                Col("cpu_load", "CPU load", "real", lo=1, hi=100),
                Col("open_ports", "number of open ports", "int", lo=1, hi=40)),
          "incidents", "incidents", Col("severity", "severity", "cat", ("Low", "Medium", "High", "Critical")),
          Col("downtime", "downtime in minutes", "int", lo=0, hi=600)),
    Theme("media",
          Table("films", "film", "films",
                Col("title", "title", "text", ("Dune Road", "Blue Hour", "Night Bus", "Paper Moon", "Iron Sky", "Quiet Bay")),
                Col("genre", "genre", "cat", ("Drama", "Comedy", "Horror", "Action", "Documentary")),
                Col("budget", "budget", "real", lo=0.5, hi=250),
                Col("runtime", "runtime in minutes", "int", lo=70, hi=190)),
          "reviews", "reviews", Col("critic", "critic", "cat", ("Ebert", "Kael", "Sarris", "Crowther")),
          Col("stars", "stars", "int", lo=1, hi=5)),
]

AGGS = [("AVG", "average"), ("SUM", "total"), ("MAX", "maximum"), ("MIN", "minimum")]


def sql_literal(value):
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def column_type(col: Col) -> str:
    return {"text": "TEXT", "cat": "TEXT", "int": "INT", "real": "REAL"}[col.kind]


def draw(col: Col, rng: random.Random):
    if col.kind in ("text", "cat"):
        return rng.choice(col.pool)
    if col.kind == "int":
        return rng.randint(int(col.lo), int(col.hi))
    return round(rng.uniform(col.lo, col.hi), 1)


def main_rows(t: Table, rng: random.Random, n: int) -> list[dict]:
    keys = rng.sample(t.key.pool, n)
    return [{"id": i + 1, t.key.name: k, t.cat.name: draw(t.cat, rng), t.num.name: draw(t.num, rng),
             t.num2.name: draw(t.num2, rng)} for i, k in enumerate(keys)]


def create_and_insert(name: str, cols: list[tuple[str, str]], rows: list[dict]) -> str:
    ddl = f"CREATE TABLE {name} ({', '.join(f'{c} {ty}' for c, ty in cols)});"
    values = ", ".join("(" + ", ".join(sql_literal(r[c]) for c, _ in cols) + ")" for r in rows)
    return f"{ddl} INSERT INTO {name} VALUES {values};"


def main_context(t: Table, rows: list[dict]) -> str:
    cols = [("id", "INT")] + [(c.name, column_type(c)) for c in (t.key, t.cat, t.num, t.num2)]
    return create_and_insert(t.name, cols, rows)


def threshold(col: Col, rows: list[dict], rng: random.Random):
    """A cut between observed values, so a filter keeps some rows and drops others."""
    values = sorted(r[col.name] for r in rows)
    a, b = values[rng.randrange(len(values) - 1)], values[-1]
    cut = (a + b) / 2 if a != b else a
    return int(cut) if col.kind == "int" else round(cut, 1)


def single_table_example(theme: Theme, rng: random.Random) -> dict:
    t = theme.main
    rows = main_rows(t, rng, rng.randint(3, 4))
    num = rng.choice([t.num, t.num2])
    cat_value = rng.choice(rows)[t.cat.name]
    shape = rng.choice(["filter_eq", "filter_gt", "count", "aggregate", "group_by", "order_limit",
                        "between", "like", "filter_and"])
    agg, agg_word = rng.choice(AGGS)
    if shape == "filter_eq":
        q = f"List the {t.key.label}s of {t.plural} whose {t.cat.label} is {cat_value}."
        sql = f"SELECT {t.key.name} FROM {t.name} WHERE {t.cat.name} = {sql_literal(cat_value)};"
        kind, task = "basic SQL", "data retrieval"
    elif shape == "filter_gt":
        cut = threshold(num, rows, rng)
        word, op = rng.choice([("more than", ">"), ("less than", "<")])
        q = f"Which {t.plural} have a {num.label} {word} {cut}? Show the {t.key.label}."
        sql = f"SELECT {t.key.name} FROM {t.name} WHERE {num.name} {op} {cut};"
        kind, task = "basic SQL", "data retrieval"
    elif shape == "count":
        q = f"How many {t.plural} have the {t.cat.label} {cat_value}?"
        sql = f"SELECT COUNT(*) FROM {t.name} WHERE {t.cat.name} = {sql_literal(cat_value)};"
        kind, task = "aggregation", "analytics and reporting"
    elif shape == "aggregate":
        q = f"What is the {agg_word} {num.label} of {t.plural} with the {t.cat.label} {cat_value}?"
        sql = f"SELECT {agg}({num.name}) FROM {t.name} WHERE {t.cat.name} = {sql_literal(cat_value)};"
        kind, task = "aggregation", "analytics and reporting"
    elif shape == "group_by":
        q = f"What is the {agg_word} {num.label} for each {t.cat.label}?"
        sql = f"SELECT {t.cat.name}, {agg}({num.name}) FROM {t.name} GROUP BY {t.cat.name};"
        kind, task = "aggregation", "analytics and reporting"
    elif shape == "order_limit":
        k = rng.randint(1, 3)
        word, order = rng.choice([("highest", "DESC"), ("lowest", "ASC")])
        which = f"the {t.singular}" if k == 1 else f"the {k} {t.plural}"
        q = f"Show the {t.key.label} of {which} with the {word} {num.label}."
        sql = f"SELECT {t.key.name} FROM {t.name} ORDER BY {num.name} {order} LIMIT {k};"
        kind, task = "basic SQL", "data retrieval"
    elif shape == "between":
        values = sorted(r[num.name] for r in rows)
        lo, hi = values[0], values[rng.randrange(1, len(values))]
        q = f"List the {t.key.label}s of {t.plural} with a {num.label} between {lo} and {hi}."
        sql = f"SELECT {t.key.name} FROM {t.name} WHERE {num.name} BETWEEN {lo} AND {hi};"
        kind, task = "basic SQL", "data retrieval"
    elif shape == "like":
        prefix = rng.choice(rows)[t.key.name][:rng.randint(1, 2)]
        q = f"Find the {t.plural} whose {t.key.label} starts with '{prefix}'. Show all columns."
        sql = f"SELECT * FROM {t.name} WHERE {t.key.name} LIKE '{prefix}%';"
        kind, task = "basic SQL", "data retrieval"
    else:
        cut = threshold(num, rows, rng)
        q = f"Which {t.plural} have the {t.cat.label} {cat_value} and a {num.label} above {cut}? Show the {t.key.label}."
        sql = (f"SELECT {t.key.name} FROM {t.name} WHERE {t.cat.name} = {sql_literal(cat_value)} "
               f"AND {num.name} > {cut};")
        kind, task = "basic SQL", "data retrieval"
    return {"sql_complexity": kind, "sql_task_type": task, "sql_prompt": q,
            "sql_context": main_context(t, rows), "sql": sql}


def join_example(theme: Theme, rng: random.Random) -> dict:
    t, fk = theme.main, f"{theme.main.singular.split()[-1]}_id"
    rows = main_rows(t, rng, 3)
    child = [{"id": i + 1, fk: rng.choice(rows)["id"], theme.child_key.name: draw(theme.child_key, rng),
              theme.child_num.name: draw(theme.child_num, rng)} for i in range(3)]
    context = main_context(t, rows) + " " + create_and_insert(
        theme.child, [("id", "INT"), (fk, "INT"), (theme.child_key.name, column_type(theme.child_key)),
                      (theme.child_num.name, column_type(theme.child_num))], child)
    n, agg_word, agg = theme.child_num, *rng.choice([("total", "SUM"), ("average", "AVG"), ("number of", "COUNT")])
    on = f"{t.name}.id = {theme.child}.{fk}"
    if rng.random() < 0.5:
        target = "*" if agg == "COUNT" else f"{theme.child}.{n.name}"
        what = f"{agg_word} {theme.child_plural}" if agg == "COUNT" else f"{agg_word} {n.label}"
        q = f"What is the {what} for each {t.singular}? Show the {t.key.label}."
        sql = (f"SELECT {t.name}.{t.key.name}, {agg}({target}) FROM {t.name} JOIN {theme.child} ON {on} "
               f"GROUP BY {t.name}.{t.key.name};")
        kind = "aggregation"
    else:
        value = rng.choice(child)[theme.child_key.name]
        q = (f"List the {t.key.label}s of {t.plural} with {theme.child_plural} whose "
             f"{theme.child_key.label} is {value}.")
        sql = (f"SELECT DISTINCT {t.name}.{t.key.name} FROM {t.name} JOIN {theme.child} ON {on} "
               f"WHERE {theme.child}.{theme.child_key.name} = {sql_literal(value)};")
        kind = "single join"
    return {"sql_complexity": kind, "sql_task_type": "analytics and reporting", "sql_prompt": q,
            "sql_context": context, "sql": sql}


def gold_result(record: dict) -> list:
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(record["sql_context"])
        return db.execute(record["sql"]).fetchall()
    finally:
        db.close()


def records(n: int, rng: random.Random, seen: set) -> list[dict]:
    out = []
    while len(out) < n:
        theme = rng.choice(THEMES)
        rec = join_example(theme, rng) if rng.random() < 0.15 else single_table_example(theme, rng)
        key = (rec["sql_context"], rec["sql_prompt"])
        # An empty gold result cannot tell a right query from a wrong one.
        if key in seen or not gold_result(rec):
            continue
        seen.add(key)
        out.append({"id": 0, "domain": theme.domain, **rec})
    return out


def write_jsonl(path: str, rows: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--sizes", default="train=1200,validation=100,test=200")
    args = ap.parse_args()
    rng, seen, next_id = random.Random(args.seed), set(), 1
    for split, size in (s.split("=") for s in args.sizes.split(",")):
        rows = records(int(size), rng, seen)
        for row in rows:
            row["id"], next_id = next_id, next_id + 1
        write_jsonl(os.path.join(args.out, f"{split}.jsonl"), rows)
        print(f"{split}: {len(rows)} records")


if __name__ == "__main__":
    main()
