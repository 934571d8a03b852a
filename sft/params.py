"""Read one section of params.yaml into a typed object: unknown keys and values of the wrong type
are errors when the section is loaded, before a stage touches the disk."""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import sys
import types
import typing
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


def type_name(kind) -> str:
    if kind is type(None):
        return "null"
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(type_name(k) for k in typing.get_args(kind))
    origin = typing.get_origin(kind)
    return getattr(origin or kind, "__name__", str(kind).replace("typing.", ""))


def fits(value: Any, kind) -> bool:
    """Whether a YAML value fits a field's annotation. Lenient where YAML is: an int is a float;
    an enum or any class YAML cannot build takes its string name."""
    if kind is Any or isinstance(kind, TypeVar):
        return True
    if kind is type(None):
        return value is None
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, k) for k in args)
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple, set, Iterable):
        return isinstance(value, list) and (not args or all(fits(v, args[0]) for v in value))
    if origin is dict:
        return isinstance(value, dict)
    if kind is bool:
        return isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in (str, dict, list):
        return isinstance(value, kind)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return isinstance(value, str)
    return isinstance(value, str) or (isinstance(kind, type) and isinstance(value, kind))


def check_types(values: dict[str, Any], annotations: dict[str, Any], where: str) -> None:
    for key, value in values.items():
        if key in annotations and not fits(value, annotations[key]):
            hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(value, str) and looks_numeric(value) else ""
            raise UserError(f"{where}.{key} is {type_name(type(value))} {value!r}; it must be "
                            f"{type_name(annotations[key])}{hint}")


def looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def from_dict(cls: type[T], values: dict[str, Any], where: str, extra_valid: Iterable[str] = ()) -> T:
    """Build dataclass `cls`; keys that are not its fields, and values that do not fit a field's
    type, raise, naming the key. The dataclass's own __post_init__ checks the values after that.

    Keys in `extra_valid` are accepted and left out of `cls`: the caller passes them on
    (trainer arguments, for instance) and checks them itself.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    extra_valid = set(extra_valid)
    for key in values:
        if key not in fields and key not in extra_valid:
            raise UserError(f"{where}: unknown key '{key}'{closest(key, fields | extra_valid)}")
    own = {k: v for k, v in values.items() if k in fields}
    check_types(own, typing.get_type_hints(cls), where)
    return cls(**own)


def load(section: str, cls: type[T], path: str = PARAMS_FILE) -> T:
    params = from_dict(cls, read_section(section, path), f"{path}: {section}")
    log_params(section, dataclasses.asdict(params))
    return params


def one_of(section: str, key: str, value: Any, valid: Iterable) -> None:
    """A check for __post_init__: `value` must be one of `valid`."""
    valid = tuple(valid)
    if value not in valid:
        raise UserError(f"{PARAMS_FILE}: {section}.{key} is {value!r}; use one of {', '.join(map(str, valid))}")


def log_params(section: str, values: dict[str, Any]) -> None:
    print(f"[{section}] params: {json.dumps(values, sort_keys=True, default=str)}", flush=True)


def run(main: Callable[[], None]) -> None:
    """Call a stage's main(); a UserError ends it with one clear line and exit status 2."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
