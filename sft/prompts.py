"""Render records through prompts/<dataset>/{system,user,assistant}.jinja into chat messages.

Templates run in jinja's immutable sandbox (no template can change what another sees) with
undefined variables as errors; any error rendering a record is one line naming the template. Dataset-specific tidying is a
filter here (e.g. `{{ sql | format_sql }}`), never a branch on the dataset's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from sft.params import UserError

ROLES = ("system", "user", "assistant")


def format_sql(query: str) -> str:
    """Pretty-print SQL (keywords upper-case, one clause a line), as the workshop did for gretelai."""
    import sqlparse

    return sqlparse.format(query, reindent=True, keyword_case="upper").strip()


LANGUAGES = {"de": "German", "fr": "French", "it": "Italian", "rm": "Romansh", "en": "English"}


def language_name(code: str) -> str:
    """'de' -> 'German': prompts name languages in words (ipst/slds stores codes)."""
    return LANGUAGES.get(code, code)


FILTERS = {"format_sql": format_sql, "language_name": language_name}


@dataclass
class Templates:
    folder: Path
    by_role: dict[str, jinja2.Template]
    variables: dict[str, set[str]]  # the record fields each template reads

    def messages(self, record: dict, where: str) -> tuple[list[dict], list[dict]]:
        """(prompt, completion) in conversational prompt-completion form."""
        text = {role: self.render(role, record, where) for role in self.by_role}
        prompt = [{"role": r, "content": text[r]} for r in ("system", "user") if r in text]
        if not text["assistant"]:
            raise UserError(f"{where}: the completion rendered by {self.folder}/assistant.jinja is empty; "
                            "fill the field it reads or drop the record")
        return prompt, [{"role": "assistant", "content": text["assistant"]}]

    def render(self, role: str, record: dict, where: str) -> str:
        template = f"{self.folder}/{role}.jinja"
        for name in sorted(self.variables[role]):
            if name in record and record[name] is None:
                raise UserError(f"{where}: field '{name}' is null; {template} needs it: fill it or drop the record")
        try:
            # The record as one mapping, not keywords: a column may be called anything, `self` too.
            return self.by_role[role].render(record).strip()
        except jinja2.UndefinedError as e:
            raise UserError(f"{where}: {template}: {e.message}; the record has {sorted(record)}: "
                            "fix the template or the data") from None
        except Exception as e:  # a refused attribute, an include, a filter given the wrong type: the template's
            message = str(e).splitlines()[0][:300] if str(e) else ""
            raise UserError(f"{where}: {template}: {type(e).__name__}: {message}; fix the template") from None


def load_templates(folder: str | Path) -> Templates | None:
    """The folder's templates, or None when it has neither user.jinja nor assistant.jinja."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"prompts folder {folder} does not exist; see prompts/ for examples")
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    env.filters.update(FILTERS)
    by_role, variables = {}, {}
    for role in ROLES:
        path = folder / f"{role}.jinja"
        if path.is_file():
            source = path.read_text(encoding="utf-8")
            try:
                by_role[role] = env.from_string(source)
                variables[role] = jinja2.meta.find_undeclared_variables(env.parse(source))
            except jinja2.TemplateSyntaxError as e:
                raise UserError(f"{path}:{e.lineno}: template syntax error: {e.message}") from None
    if "user" not in by_role and "assistant" not in by_role:
        return None
    for role in ("user", "assistant"):
        if role not in by_role:
            raise UserError(f"{folder}/{role}.jinja is missing; templates need both user and assistant")
    return Templates(folder, by_role, variables)
