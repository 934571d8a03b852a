"""Read one section of params.yaml into a typed object: unknown keys, values of the wrong type or
out of range, and secrets are errors when the section is loaded, before a stage touches the disk."""

from __future__ import annotations

import dataclasses
import difflib
import enum
import io
import json
import math
import os
import sys
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sft.secrets import secret_env, secret_key, secret_value

T = TypeVar("T")
PARAMS_FILE = "params.yaml"


class UserError(Exception):
    """A problem the user can fix (bad params, bad data); printed as one line, never a traceback."""


def closest(key: str, valid: Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


LARGEST_INT = 2**63 - 1  # what a 64-bit field holds; a larger number in params is a mistake


def refuse_bad_values(values: Any, where: str) -> None:
    """No credential (by key or by value), no number that is not finite or does not fit 64 bits, at
    any depth; a message names the key, never the value."""
    items = values.items() if isinstance(values, dict) else enumerate(values) if isinstance(values, list) else ()
    for key, value in items:
        name = f"{where}.{key}" if isinstance(key, str) else f"{where}[{key}]"
        if isinstance(values, dict) and not isinstance(key, str):
            raise UserError(f"{where}: the key {str(key)[:40]} is {type_name(type(key))}; keys are names (text)")
        if isinstance(key, str) and secret_key(key) or isinstance(value, str) and secret_value(value):
            raise UserError(f"{name} is a secret: params go into git, dvc.lock, logs and checkpoints; delete it "
                            f"and set {secret_env(key)} in the environment instead")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{name} is {value}; it must be a finite number")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > LARGEST_INT:
            raise UserError(f"{name} is a {len(str(abs(value)))}-digit number; it must fit in 64 bits")
        refuse_bad_values(value, name)


MAX_YAML_BYTES = 1 << 20  # params and task files are a few KB; more is a mistake, or an attack


class NoAliases(yaml.SafeLoader):
    """YAML without anchors and aliases: a kilobyte of nested aliases expands to billions of nodes
    (and one that refers to itself to a cycle), so every value must be written out."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.MarkedYAMLError(None, None, "an alias (*name): aliases and anchors are not accepted here; "
                                       "write the value out", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key in seen:
                raise yaml.MarkedYAMLError(None, None, f"the key '{key}' a second time in one mapping (the later one "
                                           "would silently win); keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> Any:
    """A YAML file the project reads (params, presets, task.yaml, configs): anything malformed,
    aliased, too large or too deep is one UserError naming the file and the line."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise UserError(f"{path}: {path.stat().st_size} bytes; a YAML file read here must be under "
                            f"{MAX_YAML_BYTES} bytes")
        stream = io.StringIO(path.read_text(encoding="utf-8"))
        stream.name = str(path)  # what a YAML error's position names
        return yaml.load(stream, Loader=NoAliases)  # noqa: S506 - a SafeLoader, without aliases
    except FileNotFoundError:
        raise
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: bytes that are not UTF-8 at byte {e.start}; re-encode the file as UTF-8") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deep to read; flatten it") from None
    except ValueError as e:  # a number past Python's digit limit
        raise UserError(f"{path}: a value cannot be read: {e}") from None


def read_section(section: str, path: str = PARAMS_FILE) -> dict[str, Any]:
    try:
        params = read_yaml(path) or {}
    except FileNotFoundError as e:
        raise UserError(f"{path}: not found; run the stage from the repository root") from e
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise UserError(f"{path}: must be a mapping of sections by name (base:, prepare:, train:, ...)")
    if section not in params:
        raise UserError(f"{path}: no '{section}:' section{closest(section, params)}")
    values = params[section] or {}
    if not isinstance(values, dict):
        raise UserError(f"{path}: {section}: must be a mapping of keys, found {type_name(type(values))}")
    refuse_bad_values(values, f"{path}: {section}")
    return values


@dataclass(frozen=True)
class Range:
    """Where a number param must lie: low/high inclusive, above/below exclusive; NaN never fits."""
    low: float | None = None
    high: float | None = None
    above: float | None = None
    below: float | None = None

    def holds(self, value: float) -> bool:
        return not math.isnan(value) and all((
            self.low is None or value >= self.low, self.high is None or value <= self.high,
            self.above is None or value > self.above, self.below is None or value < self.below))

    def __str__(self) -> str:
        parts = [f">= {self.low}" if self.low is not None else "", f"> {self.above}" if self.above is not None else "",
                 f"<= {self.high}" if self.high is not None else "", f"< {self.below}" if self.below is not None else ""]
        return " and ".join(p for p in parts if p)


def ranged(default: Any, **bounds: float) -> Any:
    """A dataclass field whose value must lie in Range(**bounds) (None, where allowed, passes)."""
    return dataclasses.field(default=default, metadata={"range": Range(**bounds)})


def check_ranges(values: dict[str, Any], ranges: dict[str, Range], where: str) -> None:
    for key, value in values.items():
        if key in ranges and isinstance(value, int | float) and not isinstance(value, bool) \
                and not ranges[key].holds(value):
            raise UserError(f"{where}.{key} is {value!r}; it must be {ranges[key]}")


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
        # transformers writes `SchedulerType | str`: the string is one of the enum's values
        named = [k for k in args if isinstance(k, type) and issubclass(k, enum.Enum)]
        if named and isinstance(value, str):
            return any(fits(value, k) for k in named)
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
        return isinstance(value, str) and value in {member.value for member in kind}
    return isinstance(value, str) or (isinstance(kind, type) and isinstance(value, kind))


def check_types(values: dict[str, Any], annotations: dict[str, Any], where: str) -> None:
    for key, value in values.items():
        if key in annotations and not fits(value, annotations[key]):
            hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(value, str) and looks_numeric(value) else ""
            raise UserError(f"{where}.{key} is {type_name(type(value))} {value!r}; it must be "
                            f"{type_name(annotations[key])}{choices_of(annotations[key])}{hint}")


def choices_of(kind) -> str:
    named = [k for k in (typing.get_args(kind) or (kind,)) if isinstance(k, type) and issubclass(k, enum.Enum)]
    return f", one of {', '.join(m.value for m in named[0])}" if named else ""


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
    check_ranges(own, ranges_of(cls), where)
    return cls(**own)


def ranges_of(cls) -> dict[str, Range]:
    return {f.name: f.metadata["range"] for f in dataclasses.fields(cls) if "range" in f.metadata}


def load(section: str, cls: type[T], path: str = PARAMS_FILE, announce: bool = True) -> T:
    params = from_dict(cls, read_section(section, path), f"{path}: {section}")
    if announce:
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
        # Under DVC (it names the stage it runs), the stage's outputs were removed before it began.
        stage = os.environ.get("DVC_STAGE")
        after = f"; DVC removed {stage}'s outputs before it ran: `dvc checkout {stage}` brings back the last ones" \
            if stage else ""
        print(f"error: {e}{after}", file=sys.stderr, flush=True)
        sys.exit(2)
