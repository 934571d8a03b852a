"""Raw records of a dataset, each with where it came from (file and line, or split and index).

Local JSONL is read line by line so that a bad line is named exactly; JSON, CSV and Parquet go
through `datasets`, as does a hub id (at a pinned revision).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from sft.params import UserError, closest

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SPLIT_NAMES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation",
               "val": "validation", "test": "test"}


@dataclass
class Record:
    where: str  # "data/x.jsonl:17" or "org/name[train] record 17": what an error message names
    fields: dict


MAX_DEPTH = 32  # values nested deeper than this are no record of a text dataset
LARGEST_INT = 2**63 - 1


def problem(value, depth: int = 0) -> tuple[str, str] | None:
    """(where in the value, what is wrong) for the first value no stage can carry, or None: text
    that is not Unicode (a lone surrogate), nesting past MAX_DEPTH, a number past 64 bits."""
    if depth > MAX_DEPTH:
        return "", f"nested over {MAX_DEPTH} levels deep"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return "", f"holds a lone surrogate (\\u{ord(value[e.start]):04x}) at character {e.start + 1}, not text"
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > LARGEST_INT:
        return "", "holds a number that does not fit 64 bits"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        if isinstance(key, str) and (found := problem(key, depth + 1)) is not None:
            return f".{key.encode('utf-8', 'backslashreplace').decode()}", f"has a key that {found[1]}"
        if (found := problem(inner, depth + 1)) is not None:
            return (f".{key}" if isinstance(key, str) else f"[{key}]") + found[0], found[1]
    return None


def checked(where: str, fields: dict) -> Record:
    """A record whose every value a stage can carry, and whose id, if any, is a name or a number."""
    for name, value in fields.items():
        if (found := problem(value)) is not None:
            raise UserError(f"{where}: field '{name}{found[0]}' {found[1]}; fix or drop the record")
        if (found := problem(name)) is not None:
            raise UserError(f"{where}: a field name {found[1]}; fix or drop the record")
    rid = fields.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, str | int)):
        raise UserError(f"{where}: field 'id' is {type(rid).__name__}; an id must be text or a whole number "
                        "(or drop the id column: records are then named by where they come from)")
    return Record(where, fields)


def jsonl_records(path: Path) -> list[Record]:
    records = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{where}: bytes that are not UTF-8 at column {e.start + 1}; "
                                "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
            if not line.strip():
                continue
            try:
                fields = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); "
                                "fix or remove the line") from None
            except RecursionError:
                raise UserError(f"{where}: nested too deep to read (over {MAX_DEPTH} levels is no record); "
                                "fix or remove the line") from None
            except ValueError as e:  # a number past Python's digit limit
                raise UserError(f"{where}: a value cannot be read ({first_line(e)}); fix or remove the line") from None
            if not isinstance(fields, dict):
                raise UserError(f"{where}: a JSONL line must be a JSON object, found {type(fields).__name__}")
            records.append(checked(where, fields))
    return records


def read_with_datasets(path: Path) -> list[Record]:
    import datasets

    try:
        table = datasets.load_dataset(FORMATS[path.suffix], data_files=str(path), split="train")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: bytes that are not UTF-8 (byte {e.start}); re-encode the file as UTF-8") from None
    except Exception as e:  # noqa: BLE001 - the loaders raise many types; all mean a malformed file
        raise UserError(f"{path}: cannot be read as {path.suffix[1:].upper()}: {first_line(e)}") from None
    return [checked(f"{path} record {i}", row) for i, row in enumerate(table.to_list(), 1)]


def first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def read_file(path: Path) -> list[Record]:
    if path.suffix not in FORMATS:
        raise UserError(f"{path}: unsupported file type '{path.suffix}'; use one of {sorted(FORMATS)}")
    return jsonl_records(path) if path.suffix == ".jsonl" else read_with_datasets(path)


def split_of(path: Path) -> str | None:
    return SPLIT_NAMES.get(path.stem.lower())


def read_folder(folder: Path) -> dict[str, list[Record]]:
    """A folder of split files: train.jsonl, validation.jsonl (or valid/dev), test.jsonl."""
    files = sorted(p for p in folder.iterdir() if p.suffix in FORMATS and split_of(p))
    if not files:
        raise UserError(f"{folder}: no split files (train/validation/test with {sorted(FORMATS)}); "
                        f"found {sorted(p.name for p in folder.iterdir())}")
    splits: dict[str, list[Record]] = {}
    for path in files:
        splits.setdefault(split_of(path), []).extend(read_file(path))
    return splits


def local(dataset: str, subset: str | None) -> dict[str, list[Record]]:
    path = Path(dataset)
    if subset:
        subsets = sorted(p.name for p in path.iterdir() if p.is_dir())
        if subset not in subsets:
            raise UserError(f"{path}: no subset '{subset}'{closest(subset, subsets)}; available: {subsets}")
        path = path / subset
    return read_folder(path) if path.is_dir() else {"train": read_file(path)}


def hub(dataset: str, subset: str | None, revision: str | None) -> dict[str, list[Record]]:
    import datasets

    try:
        loaded = datasets.load_dataset(dataset, subset, revision=revision)
    except ValueError as e:  # an unknown subset: the message lists the available configurations
        raise UserError(f"dataset '{dataset}': {first_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - not found, offline, gated: one line says which
        raise UserError(f"cannot load dataset '{dataset}'{f' subset {subset!r}' if subset else ''}: "
                        f"{first_line(e)}; check prepare.dataset, or the network and HF_TOKEN") from None
    return {SPLIT_NAMES.get(name, name): [checked(f"{dataset}[{name}] record {i}", row)
                                          for i, row in enumerate(split.to_list(), 1)]
            for name, split in loaded.items()}


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name, as the hub names every dataset
HUB_PREFIX = "hf:"  # `hf:squad`: a hub id without an owner (the hub's oldest datasets), said explicitly


def hub_id(dataset: str) -> str | None:
    """The hub id `dataset` names, or None for a local path: `owner/name` (that does not exist
    here) or `hf:<id>`; anything else is a file or folder."""
    if dataset.startswith(HUB_PREFIX):
        return dataset.removeprefix(HUB_PREFIX)
    local_shape = dataset.startswith((".", "/", "~")) or Path(dataset).suffix in FORMATS or Path(dataset).parts[0] == "data"
    return dataset if HUB_ID.fullmatch(dataset) and not local_shape else None


def load(dataset: str, subset: str | None = None, revision: str | None = None,
         param: str = "prepare.dataset") -> dict[str, list[Record]]:
    """Records per split ('train', 'validation', 'test') from a local path or the hub; an error
    names the dataset as `param`, the key a user sets."""
    if not dataset.startswith(HUB_PREFIX) and Path(dataset).exists():
        return local(dataset, subset)
    if (name := hub_id(dataset)) is None:
        parent = Path(dataset).parent
        near = sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []
        raise UserError(f"{param} '{dataset}': no such file or folder ({parent}/ holds {near}); a hub "
                        f"dataset is named owner/name, or {HUB_PREFIX}<name> for one without an owner")
    return hub(name, subset, revision)
