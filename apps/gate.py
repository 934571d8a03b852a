"""The gate in front of `make serve`'s app: what a request must be before the model sees it.

A server on loopback is still reachable from every web page the user opens: a page can POST to
http://127.0.0.1:8080 (its Origin is foreign) or rebind a name it owns to 127.0.0.1 (its Host is
foreign). So a request passes only when its Host is one the server answers to and its Origin, if
any, is one of those hosts, and with a key set, it carries `Authorization: Bearer <key>` (compared
in constant time). Only the routes in ROUTES reach the app (the backends' other paths, their
administrative ones among them, get 404 or 405); a generation request's fields are an allow-list
(apps/fields.py); its body, its reply's length, the generations in flight and each request's time
are bounded; a client that never finishes its headers is cut off (HeadersInTime).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from apps.fields import bounded

LOOPBACK = ("127.0.0.1", "localhost", "::1")
GENERATING = ("/v1/chat/completions", "/v1/completions")
# Every route a client reaches, and its methods; /v1/models and /health the gate answers itself.
ROUTES = {"/v1/chat/completions": ("POST",), "/v1/completions": ("POST",), "/v1/models": ("GET",),
          "/health": ("GET",)}


@dataclass(frozen=True)
class Limits:
    hosts: tuple[str, ...] = LOOPBACK  # Host names (and Origin hosts) answered
    max_body_bytes: int = 1_000_000
    max_tokens: int = 2048
    max_in_flight: int = 16  # generations at once; more get 429
    max_seconds: float = 300.0  # one request, body and reply; then it is cut (504 before any reply)
    max_body_seconds: float = 30.0  # a body still arriving after this is a slow client (408)
    max_connections: int = 64  # open at once (uvicorn answers 503 beyond): slow clients cannot hold them all


@dataclass
class Gate:
    """ASGI middleware: refuses what fails the limits, lists the pinned model under `name` on
    /v1/models, and passes the generation routes to `app`, bounded."""

    app: object
    name: str
    api_key: str | None
    limits: Limits = Limits()
    in_flight: int = field(default=0, init=False)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":  # the app's own start-up and shutdown
            return await self.app(scope, receive, send)
        if scope["type"] != "http":
            return await send({"type": "websocket.close", "code": 1008})  # no route takes a websocket
        headers = {k.lower(): v for k, v in scope["headers"]}
        refusal = self.refusal(headers) or route_refusal(scope)
        if refusal:
            return await reply(send, *refusal)
        path = canonical(scope["path"])
        if path == "/v1/models":
            return await reply(send, 200, {"object": "list", "data": [
                {"id": self.name, "object": "model", "created": int(time.time()), "owned_by": "sft-pipeline"}]})
        if path == "/health":
            return await reply(send, 200, {"status": "ok"})
        started = Started(send)
        try:
            await asyncio.wait_for(self.generation(scope, path, receive, started), self.limits.max_seconds)
        except TimeoutError:
            if not started.status:
                await reply(send, 504, error(f"the request took over {self.limits.max_seconds:g} s; it was stopped"))

    async def generation(self, scope, path, receive, send):
        try:
            body = await asyncio.wait_for(read_body(receive, self.limits.max_body_bytes), self.limits.max_body_seconds)
        except TimeoutError:
            return await reply(send, 408, error(f"the request body took over {self.limits.max_body_seconds:g} s"))
        if body is None:
            return await reply(send, 413, error(f"the request body passed {self.limits.max_body_bytes} bytes"))
        body, refusal = bounded_request(body, path, self.limits.max_tokens, self.name)
        if refusal:
            return await reply(send, *refusal)
        if self.in_flight >= self.limits.max_in_flight:
            return await reply(send, 429, error(f"{self.in_flight} generations in flight; retry shortly"),
                               [(b"retry-after", b"1")])
        self.in_flight += 1
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        # The app sees the route as allowed: one spelling of the path, no query string.
        scope = {**scope, "path": path, "raw_path": path.encode(), "query_string": b"",
                 "headers": [*headers, (b"content-length", str(len(body)).encode())]}
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


def canonical(path: str) -> str:
    return "/" + "/".join(part for part in path.split("/") if part)


def route_refusal(scope) -> tuple[int, dict] | None:
    """404 for a path that is no route here, 405 for a route asked with another method."""
    path = canonical(scope["path"])
    if path not in ROUTES:
        return 404, error(f"no route {path[:100]!r} on this server; it serves {', '.join(ROUTES)}")
    if scope["method"] not in ROUTES[path]:
        return 405, error(f"{path} takes {', '.join(ROUTES[path])}")
    return None


def bounded_request(body: bytes, path: str, max_tokens: int, name: str) -> tuple[bytes, tuple[int, dict] | None]:
    """The body with its fields checked and `max_tokens` at most `max_tokens` (set to it when
    absent), or the status and error it is refused with."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        return body, (400, error("the request body is not JSON"))
    if not isinstance(request, dict):
        return body, (400, error("the request body is not a JSON object"))
    request, problem = bounded(request, path, max_tokens)
    if problem:
        return body, (400, error(problem))
    if request.get("model", name) != name:  # one model is served, under one name
        return body, (404, error(f"this server serves one model, '{name}'"))
    return json.dumps(request).encode(), None


class Started:
    """A `send` that remembers whether the reply has started (a timeout then cannot answer 504)."""

    def __init__(self, send):
        self.send, self.status = send, None

    async def __call__(self, message):
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class HeadersInTime(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request's headers: a client that opens
    a connection and never finishes them (slowloris) holds no connection past HEADER_SECONDS."""

    HEADER_SECONDS = 10.0
    headers_due = None

    def connection_made(self, transport):
        super().connection_made(transport)
        self.arm()

    def arm(self):
        self.disarm()
        self.headers_due = self.loop.call_later(self.HEADER_SECONDS, self.headers_late)

    def disarm(self):
        if self.headers_due is not None:
            self.headers_due.cancel()
            self.headers_due = None

    def handle_events(self):
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a request's headers have all arrived
            self.disarm()

    def on_response_complete(self):
        super().on_response_complete()
        if not self.transport.is_closing():
            self.arm()  # the next request on this connection has the same deadline

    def connection_lost(self, exc):
        self.disarm()
        super().connection_lost(exc)

    def headers_late(self):
        self.headers_due = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


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
