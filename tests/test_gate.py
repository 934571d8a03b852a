"""The gate in front of `make serve`: requests as a hostile web page or a careless client sends them,
against a stand-in app that records what reached it (the served apps are tested in test_serve)."""

import asyncio
import json

import pytest

from apps.gate import Gate, Limits, hostname

KEY = "k3y-not-a-secret"


class Recorder:
    """An ASGI app that answers 200 with the body it received, and can hold a request open."""

    def __init__(self):
        self.bodies, self.release = [], None

    async def __call__(self, scope, receive, send):
        message = await receive()
        self.bodies.append(message.get("body", b""))
        if self.release is not None:
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def request(gate, method="POST", path="/v1/chat/completions", headers=(), body=b"{}", chunks=None):
    """Status and JSON body of one request through `gate`."""
    return asyncio.run(call(gate, method, path, headers, body, chunks))


async def call(gate, method, path, headers, body, chunks=None):
    parts = list(chunks) if chunks is not None else [body]
    sent = []

    async def receive():
        if parts:
            part = parts.pop(0)
            return {"type": "http.request", "body": part, "more_body": bool(parts)}
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    default = {b"host": b"127.0.0.1:8080"}
    given = {k.lower().encode(): v.encode("latin-1") for k, v in headers}
    scope = {"type": "http", "method": method, "path": path,
             "headers": list({**default, **given}.items())}
    await gate(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, (json.loads(data) if data.startswith(b"{") else data)


def gate(api_key=KEY, **limits):
    app = Recorder()
    return Gate(app, "local", api_key, Limits(**limits)), app


def bearer(key=KEY):
    return ("Authorization", f"Bearer {key}")


def test_a_loopback_client_with_the_key_reaches_the_app_with_max_tokens_set():
    g, app = gate(max_tokens=64)
    status, body = request(g, headers=[bearer()], body=b'{"messages": []}')
    assert status == 200 and body == b"ok"
    assert json.loads(app.bodies[0]) == {"messages": [], "max_tokens": 64}


@pytest.mark.parametrize("origin", ["https://evil.example", "http://127.0.0.1.evil.example:8080", "null",
                                    "http://localhost@evil.example"])
def test_a_foreign_web_page_is_refused_before_the_app(origin):
    g, app = gate(api_key=None)
    status, body = request(g, headers=[("Origin", origin)])
    assert status == 403 and "Origin" in body["error"]["message"] and app.bodies == []


@pytest.mark.parametrize("origin", ["http://127.0.0.1:8080", "http://localhost:7860", "http://[::1]:8080"])
def test_a_loopback_page_is_let_through(origin):
    g, app = gate(api_key=None)
    assert request(g, headers=[("Origin", origin)])[0] == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "", "127.0.0.1.nip.io"])
def test_a_rebound_or_missing_host_is_refused(host):
    g, app = gate(api_key=None)
    status, body = request(g, headers=[("Host", host)])
    assert status == 421 and "--allow-host" in body["error"]["message"] and app.bodies == []


def test_a_listed_host_is_answered():
    g, _ = gate(api_key=None, hosts=("127.0.0.1", "box.lan"))
    assert request(g, headers=[("Host", "box.lan:8080"), ("Origin", "http://box.lan:7860")])[0] == 200


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {KEY}", f"Bearer {KEY}x", "Bearer",
                                           f"Bearer {KEY[:-1]}", "Bearer \u00ff"])
def test_a_missing_or_wrong_key_is_refused(authorization):
    g, app = gate()
    headers = [("Authorization", authorization)] if authorization is not None else []
    assert request(g, headers=headers)[0] == 401 and app.bodies == []
    assert request(g, "GET", "/v1/models", headers=headers)[0] == 401


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_bearer_scheme_is_matched_in_any_case(scheme):
    g, _ = gate()
    assert request(g, headers=[("Authorization", f"{scheme} {KEY}")])[0] == 200


def test_models_names_the_served_model():
    g, app = gate()
    status, body = request(g, "GET", "/v1/models", headers=[bearer()])
    assert status == 200 and [m["id"] for m in body["data"]] == ["local"] and app.bodies == []


def test_an_oversized_body_is_refused_without_reading_it_all():
    g, app = gate(max_body_bytes=1000)
    chunks = [b"x" * 600, b"x" * 600, b"never read"]
    status, body = request(g, headers=[bearer()], chunks=chunks)
    assert status == 413 and app.bodies == []


@pytest.mark.parametrize("field, value", [("max_tokens", 10**9), ("max_completion_tokens", 4097),
                                          ("max_tokens", "10"), ("max_tokens", True), ("max_tokens", 1.5)])
def test_max_tokens_over_the_cap_or_not_an_integer_is_refused(field, value):
    g, app = gate(max_tokens=4096)
    status, body = request(g, headers=[bearer()], body=json.dumps({field: value}).encode())
    assert status == 400 and field in body["error"]["message"] and app.bodies == []


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000])
def test_a_body_that_is_no_json_object_is_refused(raw):
    g, app = gate()
    status, _ = request(g, headers=[bearer()], body=raw)
    assert status == 400 and app.bodies == []


def test_generations_past_the_bound_get_429_and_later_ones_pass():
    async def scenario():
        g, app = gate(max_in_flight=2)
        app.release = asyncio.Event()
        held = [asyncio.create_task(call(g, "POST", "/v1/chat/completions", [bearer()], b"{}")) for _ in range(2)]
        await asyncio.sleep(0.05)
        refused = await call(g, "POST", "/v1/chat/completions", [bearer()], b"{}")
        app.release.set()
        answered = [await t for t in held]
        after = await call(g, "POST", "/v1/chat/completions", [bearer()], b"{}")
        return refused, answered, after

    refused, answered, after = asyncio.run(scenario())
    assert refused[0] == 429 and [a[0] for a in answered] == [200, 200] and after[0] == 200


@pytest.mark.parametrize("netloc, host", [("127.0.0.1:8080", "127.0.0.1"), ("[::1]:8080", "::1"),
                                          ("LocalHost", "localhost"), ("::1", "::1"), ("a@b:1", "b")])
def test_hostname_drops_port_brackets_and_userinfo(netloc, host):
    assert hostname(netloc) == host
