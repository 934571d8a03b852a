"""Read one section of params.yaml into a typed object; unknown keys are errors, not surprises."""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
PARAMS_FILE = "params.yaml"


class UserError(Exception):
    """A problem the user can fix (bad params, bad data); printed as one line, never a traceback."""


def closest(key: str, valid: Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def read_section(section: str, path: str = PARAMS_FILE) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            params = yaml.safe_load(f) or {}
    except FileNotFoundError as e:
        raise UserError(f"{path}: not found; run the stage from the repository root") from e
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from e
    if section not in params:
        raise UserError(f"{path}: no '{section}:' section{closest(section, params)}")
    return params[section] or {}


def from_dict(cls: type[T], values: dict[str, Any], where: str, extra_valid: Iterable[str] = ()) -> T:
    """Build dataclass `cls`; keys that are not its fields raise, naming the closest valid key.

    Keys in `extra_valid` are accepted and left out of `cls`: the caller passes them on
    (trainer arguments, for instance) and returns them separately.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    extra_valid = set(extra_valid)
    for key in values:
        if key not in fields and key not in extra_valid:
            raise UserError(f"{where}: unknown key '{key}'{closest(key, fields | extra_valid)}")
    return cls(**{k: v for k, v in values.items() if k in fields})


def load(section: str, cls: type[T], path: str = PARAMS_FILE) -> T:
    params = from_dict(cls, read_section(section, path), f"{path}: {section}")
    log_params(section, dataclasses.asdict(params))
    return params


def log_params(section: str, values: dict[str, Any]) -> None:
    print(f"[{section}] params: {json.dumps(values, sort_keys=True, default=str)}", flush=True)


def run(main: Callable[[], None]) -> None:
    """Call a stage's main(); a UserError ends it with one clear line and exit status 2."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
