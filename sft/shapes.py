"""Record shapes, all turned into conversational prompt-completion: (prompt messages, completion).

- template: any columns, rendered through prompts/<dataset>/{system,user,assistant}.jinja
- messages: {"messages": [{"role", "content"}, ...]}, the last turn the assistant's
- prompt_completion: {"prompt", "completion"}, each a string or a list of messages
- alpaca: {"instruction", "input" (optional), "output"}
- sharegpt: {"conversations": [{"from": "human"|"gpt"|"system", "value"}, ...]}, or turns with
  "role" and "content" under "conversations"

Roles: `model` (Gemma's name) is the assistant; `tool`, `function` and `ipython` turns are kept
as they are (never the completion). User and assistant turns must alternate.
"""

from __future__ import annotations

from collections.abc import Callable

from sft.params import UserError
from sft.prompts import Templates

Messages = list[dict]
ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "model": "assistant",
         "gpt": "assistant", "tool": "tool", "function": "function", "ipython": "ipython"}
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "tool": "tool", "function": "function", "observation": "tool"}


def detect(fields: dict) -> str:
    """The shape of a record from its columns; 'template' when no known shape matches."""
    if "messages" in fields:
        return "messages"
    if "conversations" in fields:
        return "sharegpt"
    if "prompt" in fields and "completion" in fields:
        return "prompt_completion"
    if "instruction" in fields and "output" in fields:
        return "alpaca"
    return "template"


def field(fields: dict, name: str, where: str):
    value = fields.get(name)
    if value is None:
        raise UserError(f"{where}: field '{name}' is missing or null; fill it or drop the record")
    return value


def checked_turns(turns, where: str) -> Messages:
    """Turns with known roles (model -> assistant), text content, and user and assistant turns
    alternating; anything else is an error naming the record and the turn."""
    if not isinstance(turns, list):
        raise UserError(f"{where}: the turns must be a list of {{'role', 'content'}}, found {type(turns).__name__}")
    checked, last = [], None
    for i, turn in enumerate(turns, 1):
        role = ROLES.get(turn.get("role")) if isinstance(turn, dict) and isinstance(turn.get("role"), str) else None
        if role is None or not isinstance(turn.get("content"), str):
            raise UserError(f"{where}: turn {i} must be {{'role': one of {sorted(ROLES)}, 'content': text}}")
        if role == "system" and checked and checked[-1]["role"] != "system":
            raise UserError(f"{where}: turn {i} is a system turn after the conversation started; put it first")
        if role in ("user", "assistant") and role == last:
            raise UserError(f"{where}: turns {i - 1} and {i} are both {role} turns; user and assistant turns must "
                            "alternate (merge the two, or fix the record)")
        # A tool's result answers the assistant's call: the assistant may speak again after it.
        last = "user" if role in ("tool", "function", "ipython") else role if role != "system" else last
        checked.append({**turn, "role": role})
    return checked


def split_turns(turns, where: str) -> tuple[Messages, Messages]:
    """Everything before the last assistant turn is the prompt; that turn is the completion."""
    turns = checked_turns(turns, where)
    if not turns or turns[-1]["role"] != "assistant":
        raise UserError(f"{where}: the last turn must be the assistant's answer (the completion)")
    if len(turns) < 2:
        raise UserError(f"{where}: no prompt before the assistant's answer")
    return [dict(t) for t in turns[:-1]], [dict(turns[-1])]


def text(fields: dict, name: str, where: str, optional: bool = False) -> str:
    """A field that must hold text (or, when optional, be missing or null: then '')."""
    value = fields.get(name) if optional else field(fields, name, where)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UserError(f"{where}: field '{name}' is {type(value).__name__}; it must be text")
    return value


def turns_of(fields: dict, name: str, where: str) -> list:
    value = field(fields, name, where)
    if not isinstance(value, list):
        raise UserError(f"{where}: field '{name}' is {type(value).__name__}; it must be a list of turns")
    return value


def as_turns(fields: dict, name: str, role: str, where: str) -> Messages:
    """A prompt or completion: text (one turn of `role`) or a list of turns."""
    value = field(fields, name, where)
    return [{"role": role, "content": text(fields, name, where)}] if not isinstance(value, list) else list(value)


def from_messages(fields: dict, where: str, _: Templates | None) -> tuple[Messages, Messages]:
    return split_turns(turns_of(fields, "messages", where), where)


def from_sharegpt(fields: dict, where: str, _: Templates | None) -> tuple[Messages, Messages]:
    turns = []
    for i, turn in enumerate(turns_of(fields, "conversations", where), 1):
        if isinstance(turn, dict) and "from" not in turn and "role" in turn:
            turns.append(turn)  # role/content turns under "conversations": already messages
            continue
        speaker = turn.get("from") if isinstance(turn, dict) else None
        if not isinstance(speaker, str) or speaker not in SHAREGPT_ROLES:
            raise UserError(f"{where}: conversations turn {i}: 'from' is {speaker!r}; use one of "
                            f"{sorted(SHAREGPT_ROLES)} (or 'role' and 'content')")
        turns.append({"role": SHAREGPT_ROLES[speaker], "content": turn.get("value")})
    return split_turns(turns, where)


def from_prompt_completion(fields: dict, where: str, _: Templates | None) -> tuple[Messages, Messages]:
    prompt = as_turns(fields, "prompt", "user", where)
    completion = as_turns(fields, "completion", "assistant", where)
    return split_turns(prompt + completion, where)


def from_alpaca(fields: dict, where: str, _: Templates | None) -> tuple[Messages, Messages]:
    instruction, extra = text(fields, "instruction", where), text(fields, "input", where, optional=True)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return [{"role": "user", "content": user}], [{"role": "assistant", "content": text(fields, "output", where)}]


def from_template(fields: dict, where: str, templates: Templates | None) -> tuple[Messages, Messages]:
    if templates is None:
        raise UserError(f"{where}: columns {sorted(fields)} match no known shape and the prompts folder has no "
                        "user.jinja/assistant.jinja; add templates or set prepare.shape")
    return templates.messages(fields, where)


CONVERTERS: dict[str, Callable[[dict, str, Templates | None], tuple[Messages, Messages]]] = {
    "template": from_template, "messages": from_messages, "prompt_completion": from_prompt_completion,
    "alpaca": from_alpaca, "sharegpt": from_sharegpt,
}


def converter(shape: str, first: dict, has_templates: bool):
    """The converter for `shape`; 'auto' uses the templates when there are any, else the columns."""
    if shape == "auto":
        shape = "template" if has_templates else detect(first)
    if shape not in CONVERTERS:
        raise UserError(f"prepare.shape '{shape}' is unknown; use auto or one of {sorted(CONVERTERS)}")
    return CONVERTERS[shape]


def non_empty(prompt: Messages, completion: Messages, where: str) -> tuple[Messages, Messages]:
    if not completion[0]["content"].strip():
        raise UserError(f"{where}: the completion is empty; fill it or drop the record")
    return prompt, completion
