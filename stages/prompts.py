"""Render records through prompts/<dataset>/{system,user,assistant}.jinja into chat messages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

from stages.params import UserError

ROLES = ("system", "user", "assistant")


@dataclass
class Task:
    metric: str
    references: list[str]


@dataclass
class Templates:
    folder: Path
    by_role: dict[str, jinja2.Template]

    def messages(self, record: dict, where: str) -> tuple[list[dict], list[dict]]:
        """(prompt, completion) in conversational prompt-completion form."""
        text = {role: self.render(role, record, where) for role in self.by_role}
        prompt = [{"role": r, "content": text[r]} for r in ("system", "user") if r in text]
        if not text["assistant"]:
            raise UserError(f"{where}: the completion rendered by {self.folder}/assistant.jinja is empty; "
                            "fill the field it reads or drop the record")
        return prompt, [{"role": "assistant", "content": text["assistant"]}]

    def render(self, role: str, record: dict, where: str) -> str:
        try:
            return self.by_role[role].render(**record).strip()
        except jinja2.UndefinedError as e:
            raise UserError(f"{where}: {self.folder}/{role}.jinja: {e.message}; the record has "
                            f"{sorted(record)}: fix the template or the data") from e


def load_templates(folder: str | Path) -> Templates:
    folder = Path(folder)
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    by_role = {}
    for role in ROLES:
        path = folder / f"{role}.jinja"
        if path.is_file():
            try:
                by_role[role] = env.from_string(path.read_text(encoding="utf-8"))
            except jinja2.TemplateSyntaxError as e:
                raise UserError(f"{path}:{e.lineno}: template syntax error: {e.message}") from e
    for role in ("user", "assistant"):
        if role not in by_role:
            raise UserError(f"{folder}/{role}.jinja is missing; a dataset needs user and assistant templates")
    return Templates(folder, by_role)


def load_task(folder: str | Path) -> Task:
    path = Path(folder) / "task.yaml"
    if not path.is_file():
        raise UserError(f"{path} is missing; it names the task's metric (see prompts/sql/task.yaml)")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(data) - {"metric", "references"}
    if unknown:
        raise UserError(f"{path}: unknown keys {sorted(unknown)}; valid: metric, references")
    if "metric" not in data:
        raise UserError(f"{path}: no 'metric:' key")
    return Task(metric=data["metric"], references=list(data.get("references") or []))
