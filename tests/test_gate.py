"""The gate in front of `make serve`: requests as a hostile web page or a careless client sends them,
against a stand-in app that records what reached it (the served apps are tested in test_serve)."""

import asyncio
import json
import time

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
        if parts and parts[0] is not None:  # None: a client that goes silent there
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


METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")


def backend_routes() -> dict[str, set[str]]:
    """Every path (and its methods) that the two CPU backends' apps serve, read off the apps
    themselves: transformers serve's FastAPI app and llama-cpp-python's router."""
    from transformers.cli.serving.server import build_server

    routes: dict[str, set[str]] = {}
    apps = [build_server(*[None] * 6).routes]
    try:
        from llama_cpp.server.app import router
        apps.append(router.routes)
    except ImportError:  # llama.cpp not installed here: its routes are walked where it is (CI)
        pass
    for listed in apps:
        for route in listed:
            routes.setdefault(route.path, set()).update(getattr(route, "methods", None) or {"GET"})
    return routes


def test_every_path_the_backends_serve_is_refused_unless_allowed():
    from apps.gate import ROUTES

    served = backend_routes()
    assert {"/v1/chat/completions", "/v1/completions", "/load_model", "/reset", "/docs"} <= set(served)
    g, app = gate(max_body_bytes=100)
    walked = 0
    for path in {*served, "/", "/v1", "/v1/models/x", "/metrics", "/v1/embeddings"}:
        for method in METHODS:
            status, _ = request(g, method, path, headers=[bearer()], body=b'{"model": "local"}')
            walked += 1
            expected = 200 if method in ROUTES.get(path, ()) else 405 if path in ROUTES else 404
            assert status == expected, (method, path, status)
    assert walked >= 7 * 10 and len(app.bodies) == 2, "only the two generation routes' POSTs reached the app"


@pytest.mark.parametrize("path", ["/load_model", "//load_model", "/v1/../load_model", "/v1/chat/completions/../../reset",
                                  "/v1/responses", "/v1/audio/transcriptions", "/extras/tokenize", "/docs", "/openapi.json"])
def test_administrative_and_unlisted_paths_never_reach_the_app(path):
    g, app = gate()
    status, body = request(g, "POST", path, headers=[bearer()], body=b'{"model": "/etc"}')
    assert status == 404 and "no route" in body["error"]["message"] and app.bodies == []


@pytest.mark.parametrize("path", ["/v1/chat/completions/", "//v1//chat/completions"])
def test_a_route_spelled_otherwise_reaches_the_app_as_the_route_and_bounded(path):
    g, app = gate(max_tokens=16)
    status, _ = request(g, "POST", path, headers=[bearer()], body=b'{"messages": []}')
    assert status == 200 and json.loads(app.bodies[0])["max_tokens"] == 16


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "OPTIONS"])
def test_a_generation_route_asked_with_another_method_is_405(method):
    g, app = gate()
    assert request(g, method, "/v1/chat/completions", headers=[bearer()])[0] == 405 and app.bodies == []


@pytest.mark.parametrize("body", [{"max_tokens": 0}, {"max_tokens": -1}, {"max_completion_tokens": 0},
                                  {"max_completion_tokens": 17}, {"max_tokens": 8, "max_completion_tokens": 9},
                                  {"max_tokens": 8, "max_completion_tokens": 100},
                                  {"generation_config": '{"max_new_tokens": 100000}'}, {"max_new_tokens": 100000},
                                  {"n_predict": -1}, {"n": 50}, {"best_of": 20}, {"chat_template_kwargs": {}},
                                  {"grammar": "root ::= x*"}, {"stop": ["x"] * 100_000}, {"stop": ["x" * 10_000]},
                                  {"stop": [""]}, {"stop": 5}, {"temperature": 1e308}, {"seed": 10**30},
                                  {"logit_bias": {str(i): 1 for i in range(1000)}}, {"top_logprobs": 1000},
                                  {"messages": "hi"}, {"stream": "yes"},
                                  {"messages": [{"role": "user", "content": [
                                      {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]},
                                  {"messages": [{"role": "user", "content": [{"type": "input_audio", "text": "x"}]}]},
                                  {"messages": [{"role": "root", "content": "x"}]},
                                  {"messages": [{"role": "user", "content": "x", "tool_calls": []}]},
                                  {"messages": [{"role": "user", "content": None}]},
                                  {"messages": [{"role": "user", "content": "x"}] * 1001}])
def test_every_spelling_of_a_reply_size_and_every_unlisted_field_is_refused(body):
    g, app = gate(max_tokens=16)
    status, answer = request(g, headers=[bearer()], body=json.dumps({"messages": [], **body}).encode())
    assert status == 400 and app.bodies == [], (body, status)
    assert any(key in answer["error"]["message"] for key in body)


@pytest.mark.parametrize("body, asked", [({"max_completion_tokens": 12}, 12), ({"max_tokens": 16}, 16),
                                         ({"max_tokens": None}, 16), ({"max_tokens": 5, "max_completion_tokens": 5}, 5)])
def test_the_app_gets_one_max_tokens_whatever_the_spelling(body, asked):
    g, app = gate(max_tokens=16)
    status, _ = request(g, headers=[bearer()], body=json.dumps({"messages": [], "stop": ["\n"] * 16, **body}).encode())
    assert status == 200 and json.loads(app.bodies[0]) == {"messages": [], "stop": ["\n"] * 16, "max_tokens": asked}


def test_a_completion_request_takes_its_own_fields():
    g, app = gate(max_tokens=16)
    body = {"prompt": "SELECT", "echo": False, "logprobs": 2, "stream": True, "best_of": 1}
    assert request(g, "POST", "/v1/completions", headers=[bearer()], body=json.dumps(body).encode())[0] == 200
    assert request(g, "POST", "/v1/completions", headers=[bearer()], body=b'{"prompt": ["a", "b"]}')[0] == 400


def test_a_request_past_its_time_is_stopped_with_504_and_frees_its_slot():
    async def scenario():
        g, app = gate(max_seconds=0.2, max_in_flight=1)
        app.release = asyncio.Event()  # the app never answers
        first = await call(g, "POST", "/v1/chat/completions", [bearer()], b"{}")
        app.release.set()
        return first, await call(g, "POST", "/v1/chat/completions", [bearer()], b"{}")

    first, second = asyncio.run(scenario())
    assert first[0] == 504 and second[0] == 200


@pytest.mark.parametrize("limits, status", [({"max_seconds": 0.2}, 504), ({"max_body_seconds": 0.2}, 408)])
def test_a_body_that_never_ends_is_stopped_in_time(limits, status):
    g, app = gate(**limits)
    assert request(g, headers=[bearer()], chunks=[b"{", b'"messages"', None])[0] == status and app.bodies == []


def test_a_client_that_never_finishes_its_headers_is_cut_off(monkeypatch):
    import socket
    import threading

    import uvicorn
    from conftest import free_port

    from apps.gate import HeadersInTime

    monkeypatch.setattr(HeadersInTime, "HEADER_SECONDS", 0.5)
    g, _ = gate(api_key=None)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(g, host="127.0.0.1", port=port, log_level="error", http=HeadersInTime,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        started = time.monotonic()
        assert slow.recv(1024) == b"" and time.monotonic() - started < 3, "the server closed the connection"
        fine = socket.create_connection(("127.0.0.1", port), timeout=5)
        fine.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert fine.recv(1024).startswith(b"HTTP/1.1 200")
    finally:
        server.should_exit = True
        thread.join(10)


def test_text_parts_pass_and_another_model_is_404():
    g, app = gate()
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "model": "local"}
    assert request(g, headers=[bearer()], body=json.dumps(parts).encode())[0] == 200
    other = {"messages": [], "model": "/models/another"}
    assert request(g, headers=[bearer()], body=json.dumps(other).encode())[0] == 404 and len(app.bodies) == 1
