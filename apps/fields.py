"""What a generation request may carry past the gate: an allow-list of OpenAI request fields, each
with its type and bounds.

Every backend reads its own spelling of a request's size (`max_tokens`, `max_completion_tokens`,
transformers' `generation_config` JSON string, llama.cpp's own sampling keys), and a field the gate
does not know passes through to a backend that may act on it. So a request is refused (400, naming
the field) unless each of its fields is listed here and holds a value of the listed kind; the
reply's length is capped by one field, `max_tokens`, that both backends read.
"""

from __future__ import annotations

import math
from collections.abc import Callable

MAX_STOPS = 16  # stop strings a request may give (OpenAI takes 4); each is tried at every token
MAX_STOP_CHARS = 256
MAX_TEXT = 256  # model and user names
MAX_LOGIT_BIAS = 300  # OpenAI's own limit
MAX_LOGPROBS = 20


def number(low: float, high: float) -> Callable[[object], str | None]:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or not low <= value <= high:
            return f"must be a number from {low} to {high}"
        return None
    return check


def whole(low: int, high: int) -> Callable[[object], str | None]:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"must be a whole number from {low} to {high}"
        return None
    return check


def text(limit: int) -> Callable[[object], str | None]:
    return lambda value: None if isinstance(value, str) and len(value) <= limit else f"must be text of at most {limit} characters"


def flag(value) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def is_text(value) -> str | None:
    return None if isinstance(value, str) else "must be text"


def stops(value) -> str | None:
    listed = [value] if isinstance(value, str) else value
    if not isinstance(listed, list) or len(listed) > MAX_STOPS or not all(
            isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in listed):
        return f"must be a string or a list of at most {MAX_STOPS}, each 1 to {MAX_STOP_CHARS} characters"
    return None


def logit_bias(value) -> str | None:
    if not isinstance(value, dict) or len(value) > MAX_LOGIT_BIAS or not all(
            k.isdigit() and len(k) < 10 and number(-100, 100)(v) is None for k, v in value.items()):
        return f"must map at most {MAX_LOGIT_BIAS} token ids to numbers from -100 to 100"
    return None


def logprobs(value) -> str | None:  # chat: true/false; completions: how many per token
    return flag(value) if isinstance(value, bool) else whole(0, MAX_LOGPROBS)(value)


def only_one(value) -> str | None:
    return None if value == 1 and not isinstance(value, bool) else "must be 1 on this server (one reply a request)"


ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_MESSAGES = 1000


def text_content(content) -> bool:
    """Text, or a list of text parts: the served models read text, and an image or file part is a
    URL or path the backend would fetch or open."""
    return isinstance(content, str) or isinstance(content, list) and all(
        isinstance(part, dict) and set(part) == {"type", "text"} and part["type"] == "text"
        and isinstance(part["text"], str) for part in content)


def messages(value) -> str | None:
    if not isinstance(value, list) or len(value) > MAX_MESSAGES or not all(
            isinstance(m, dict) and not set(m) - {"role", "content", "name"} and m.get("role") in ROLES
            and text_content(m.get("content")) and isinstance(m.get("name", ""), str) for m in value):
        return (f"must be a list of at most {MAX_MESSAGES} {{role, content}} messages: a role of {', '.join(ROLES)}, "
                "content as text or text parts (no images, audio or files on this server)")
    return None


def stream_options(value) -> str | None:
    if not isinstance(value, dict) or set(value) - {"include_usage"} or flag(value.get("include_usage", False)):
        return "must be {\"include_usage\": true|false}"
    return None


SHARED = {
    "model": text(MAX_TEXT), "user": text(MAX_TEXT), "stream": flag, "stream_options": stream_options,
    "stop": stops, "seed": whole(-2**63, 2**64 - 1), "n": only_one,
    "temperature": number(0, 2), "top_p": number(0, 1), "top_k": whole(0, 1000), "min_p": number(0, 1),
    "presence_penalty": number(-2, 2), "frequency_penalty": number(-2, 2), "repeat_penalty": number(0, 10),
    "logit_bias": logit_bias, "logprobs": logprobs,
}
FIELDS = {
    "/v1/chat/completions": {**SHARED, "messages": messages, "top_logprobs": whole(0, MAX_LOGPROBS)},
    "/v1/completions": {**SHARED, "prompt": is_text, "echo": flag, "best_of": only_one},
}
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")  # the reply's length, in either spelling


def bounded(request: dict, path: str, cap: int) -> tuple[dict, str | None]:
    """The request with one `max_tokens` of 1..cap (the cap when none is asked), or why it is refused."""
    fields = FIELDS[path]
    for key, value in request.items():
        if key in TOKEN_FIELDS:
            continue
        if key not in fields:
            return request, f"'{key}' is not accepted by this server; it takes {', '.join(sorted([*fields, *TOKEN_FIELDS]))}"
        if (why := fields[key](value)) is not None:
            return request, f"'{key}' {why}"
    asked = {k: request[k] for k in TOKEN_FIELDS if request.get(k) is not None}
    for key, value in asked.items():
        if (why := whole(1, cap)(value)) is not None:
            return request, f"'{key}' {why} on this server"
    if len(set(asked.values())) > 1:
        return request, "'max_tokens' and 'max_completion_tokens' differ; give one"
    request = {k: v for k, v in request.items() if k not in TOKEN_FIELDS}
    return {**request, "max_tokens": next(iter(asked.values()), cap)}, None
