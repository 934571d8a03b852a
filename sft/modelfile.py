"""An Ollama Modelfile derived from the model's own chat template, never typed by hand.

The jinja chat template is rendered with marker contents; the text around each marker gives
every role's wrapper (what comes before and after a message's content), the reply header, and
what the template writes when there is no system message (a BOS, a default system prompt).
Those parts become the Go template Ollama reads (`TEMPLATE`). The parts are then checked by
rendering conversations both ways; a template that does not split into per-role wrappers (one
that folds the system message into the first user turn, say) gets no TEMPLATE, and Ollama falls
back on the chat template the GGUF carries.
"""

from __future__ import annotations

from dataclasses import dataclass

from sft.stops import stop_tokens

MARK = "\u2403{}\u2403"


@dataclass(frozen=True)
class TurnParts:
    system_first: str  # before the system message's content, the start of the text included
    system_after: str
    no_system: str  # what the template writes first without a system message
    user_before: str
    user_after: str
    assistant_before: str
    assistant_after: str
    reply_header: str  # opens the reply the model writes


def _render(tokenizer, messages: list[dict], reply: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=reply)


def _without(text: str, *, prefix: str = "", suffix: str = "") -> str | None:
    if not (text.startswith(prefix) and text.endswith(suffix)) or len(prefix) + len(suffix) > len(text):
        return None
    return text[len(prefix):len(text) - len(suffix)]


def turn_parts(tokenizer) -> TurnParts | None:
    """The template's per-role wrappers, or None when it does not split into them."""
    s, u1, a1, u2 = (MARK.format(n) for n in ("system", "user1", "assistant1", "user2"))
    conversation = [{"role": "system", "content": s}, {"role": "user", "content": u1},
                    {"role": "assistant", "content": a1}, {"role": "user", "content": u2}]
    try:
        full = _render(tokenizer, conversation, reply=True)
        closed = _render(tokenizer, conversation, reply=False)
        after_answer = _render(tokenizer, conversation[:3], reply=False)
        alone = _render(tokenizer, [{"role": "user", "content": u1}], reply=False)
    except Exception:  # a template that refuses these conversations (jinja raise_exception)
        return None
    if any(m not in full for m in (s, u1, a1, u2)):
        return None
    head, rest = full.split(s, 1)
    between_su, rest = rest.split(u1, 1)
    between_ua, rest = rest.split(a1, 1)
    between_au, tail = rest.split(u2, 1)
    user_after = closed.split(u2, 1)[1] if u2 in closed else None
    assistant_after = after_answer.split(a1, 1)[1] if a1 in after_answer else None
    if user_after is None or assistant_after is None:
        return None
    user_before = _without(between_au, prefix=assistant_after)
    assistant_before = _without(between_ua, prefix=user_after)
    reply_header = _without(tail, prefix=user_after)
    system_after = _without(between_su, suffix=user_before or "") if user_before is not None else None
    no_system = _without(alone.split(u1, 1)[0], suffix=user_before) if user_before is not None and u1 in alone else None
    parts = (user_before, assistant_before, reply_header, system_after, no_system)
    if any(p is None for p in parts):
        return None
    found = TurnParts(head, system_after, no_system, user_before, user_after, assistant_before, assistant_after,
                      reply_header)
    return found if all(_render(tokenizer, c, reply=True) == rendered(found, c) for c in _checks()) else None


def _checks() -> list[list[dict]]:
    system = {"role": "system", "content": "Answer briefly."}
    turns = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
             {"role": "user", "content": "And 3+3?"}]
    return [turns[:1], [system, *turns[:1]], turns, [system, *turns]]


def rendered(parts: TurnParts, messages: list[dict]) -> str:
    """What the Go template of `go_template(parts)` writes for `messages`, with the reply header."""
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    out = [parts.system_first + system + parts.system_after if system is not None else parts.no_system]
    for m in messages:
        if m["role"] == "user":
            out.append(parts.user_before + m["content"] + parts.user_after)
        elif m["role"] == "assistant":
            out.append(parts.assistant_before + m["content"] + parts.assistant_after)
    return "".join(out) + parts.reply_header


def _go(text: str) -> str:
    """Literal text inside a Go template: `{{` would open an action."""
    return text.replace("{{", '{{ "{{" }}')


def go_template(parts: TurnParts) -> str:
    # No `{{-` trims: they would eat the newlines the chat template writes after a turn.
    return ("{{ if .System }}" + _go(parts.system_first) + "{{ .System }}" + _go(parts.system_after)
            + "{{ else }}" + _go(parts.no_system) + "{{ end }}"
            + "{{ range .Messages }}"
            + '{{ if eq .Role "user" }}' + _go(parts.user_before) + "{{ .Content }}" + _go(parts.user_after)
            + '{{ else if eq .Role "assistant" }}' + _go(parts.assistant_before) + "{{ .Content }}"
            + _go(parts.assistant_after) + "{{ end }}{{ end }}" + _go(parts.reply_header))


def stop_strings(model, tokenizer) -> list[str]:
    """The texts of the tokens generation stops at (eos, the end of turn), as Ollama's `stop`."""
    return [tokenizer.convert_ids_to_tokens(i) for i in stop_tokens(model, tokenizer)]


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def modelfile(gguf_name: str, parts: TurnParts | None, stops: list[str]) -> str:
    lines = [f"FROM ./{gguf_name}"]
    if parts is not None:
        lines.append('TEMPLATE """' + go_template(parts).replace('"""', '\\"\\"\\"') + '"""')
    lines += [f"PARAMETER stop {_quoted(s)}" for s in stops]
    return "\n".join(lines) + "\n"
