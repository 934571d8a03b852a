"""The gate in front of `make serve`'s app: what a request must be before the model sees it.

A server on loopback is still reachable from every web page the user opens: a page can POST to
http://127.0.0.1:8080 (its Origin is foreign) or rebind a name it owns to 127.0.0.1 (its Host is
foreign). So a request passes only when its Host is one the server answers to and its Origin, if
any, is one of those hosts; its body, its `max_tokens` and the generations in flight are bounded;
and with a key set, it carries `Authorization: Bearer <key>` (compared in constant time).
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1")
GENERATING = ("/v1/chat/completions", "/v1/completions")


@dataclass(frozen=True)
class Limits:
    hosts: tuple[str, ...] = LOOPBACK  # Host names (and Origin hosts) answered
    max_body_bytes: int = 1_000_000
    max_tokens: int = 2048
    max_in_flight: int = 16  # generations at once; more get 429


@dataclass
class Gate:
    """ASGI middleware: refuses what fails the limits, lists the pinned model under `name` on
    /v1/models, and passes everything else to `app` untouched."""

    app: object
    name: str
    api_key: str | None
    limits: Limits = Limits()
    in_flight: int = field(default=0, init=False)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope["headers"]}
        refusal = self.refusal(headers)
        if refusal:
            return await reply(send, *refusal)
        if scope["path"].rstrip("/") == "/v1/models" and scope["method"] == "GET":
            return await reply(send, 200, {"object": "list", "data": [
                {"id": self.name, "object": "model", "created": int(time.time()), "owned_by": "sft-pipeline"}]})
        if scope["method"] != "POST" or scope["path"].rstrip("/") not in GENERATING:
            return await self.app(scope, receive, send)
        body = await read_body(receive, self.limits.max_body_bytes)
        if body is None:
            return await reply(send, 413, error(f"the request body passed {self.limits.max_body_bytes} bytes"))
        body, problem = bounded_request(body, self.limits.max_tokens)
        if problem:
            return await reply(send, 400, error(problem))
        if self.in_flight >= self.limits.max_in_flight:
            return await reply(send, 429, error(f"{self.in_flight} generations in flight; retry shortly"),
                               [(b"retry-after", b"1")])
        self.in_flight += 1
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        try:
            return await self.app(scope, replay(body, receive), send)
        finally:
            self.in_flight -= 1

    def refusal(self, headers: dict) -> tuple[int, dict] | None:
        host = hostname(headers.get(b"host", b"").decode("latin-1"))
        if host not in self.limits.hosts:
            return 421, error(f"this server does not answer to the host {host!r}; "
                              f"start it with --allow-host {host or 'NAME'} to let it")
        origin = headers.get(b"origin")
        if origin is not None and hostname(urlsplit(origin.decode("latin-1")).netloc) not in self.limits.hosts:
            return 403, error("requests from other web pages are refused (Origin)")
        if self.api_key and not has_key(headers.get(b"authorization", b""), self.api_key):
            return 401, error("missing or wrong API key")
        return None


def hostname(netloc: str) -> str:
    """The host of a Host header or an Origin's netloc, without port or brackets, lower case."""
    netloc = netloc.rpartition("@")[2].strip().lower()
    if netloc.startswith("["):
        return netloc[1:].partition("]")[0]
    return netloc.rpartition(":")[0] if netloc.count(":") == 1 else netloc


def has_key(authorization: bytes, key: str) -> bool:
    scheme, _, token = authorization.strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), key.encode())


def bounded_request(body: bytes, max_tokens: int) -> tuple[bytes, str | None]:
    """The body with `max_tokens` at most `max_tokens` (set to it when absent), or why it is refused."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        return body, "the request body is not JSON"
    if not isinstance(request, dict):
        return body, "the request body is not a JSON object"
    for key in ("max_tokens", "max_completion_tokens"):
        asked = request.get(key)
        if asked is not None and (isinstance(asked, bool) or not isinstance(asked, int) or asked > max_tokens):
            return body, f"{key} must be an integer of at most {max_tokens} on this server"
    if request.get("max_tokens") is None and request.get("max_completion_tokens") is None:
        request["max_tokens"] = max_tokens
    return json.dumps(request).encode(), None


async def read_body(receive, limit: int) -> bytes | None:
    """The whole request body, or None once it passes `limit` bytes (nothing more is read)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        size += len(message.get("body", b""))
        if size > limit:
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def replay(body: bytes, receive):
    """An ASGI `receive` that gives the app the body read here, then the real one's messages (a
    streaming reply listens on it for the client's disconnect)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def error(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error"}}


async def reply(send, status: int, body: dict, headers: list | None = None):
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})
