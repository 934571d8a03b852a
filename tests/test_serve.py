"""serve and chat against running servers: both CPU servers (llama.cpp's, and transformers serve)
on loopback, called with the openai client, and the gradio page driven in headless Chromium. Every server a test
starts binds to 127.0.0.1, has a deadline and is stopped in a finally/teardown."""

import json
import os
import shutil
import sys
import time

import pytest
from conftest import ROOT, free_port, start, stop, wait_for_http

from sft import llamacpp
from sft.generation import generate, prompt_ids
from sft.models import load_folder
from sft.params import UserError

KEY = "test-key-not-a-secret"
MESSAGES = [{"role": "system", "content": "Reply with one SQL query."},
            {"role": "user", "content": "How many rows are in table t?"}]


def serve(model_dir, port, temp, env=None, name="local", backend="auto"):
    """A server whose temporary files go under `temp` (its TMPDIR), so that `stopped` can see what it left."""
    return start([sys.executable, "-m", "apps.serve", "--model", str(model_dir), "--name", name,
                  "--host", "127.0.0.1", "--port", str(port), "--backend", backend],
                 env={**(env or {}), "TMPDIR": str(temp)})


def stopped(proc, temp) -> None:
    """Stopped as `kill` stops it (SIGTERM), and its working folder (for llama.cpp a whole GGUF of the
    model) gone with it: uvicorn re-raises the signal after its shutdown, which once skipped the cleanup."""
    stop(proc)
    left = sorted(p.name for p in temp.glob("sft-serve-*"))
    assert not left, f"a stopped server left its working folder behind: {left}"


@pytest.fixture(scope="module", params=["llamacpp", "transformers"])
def tiny_server(tiny_model_dir, request, tmp_path_factory):
    if request.param == "llamacpp" and llamacpp.missing() is not None:
        pytest.skip("llama.cpp is not installed (make llamacpp)")
    port, temp = free_port(), tmp_path_factory.mktemp("serve-tmp")
    proc = serve(tiny_model_dir, port, temp, env={"SERVE_API_KEY": KEY}, backend=request.param)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v1/models", proc, headers={"Authorization": f"Bearer {KEY}"})
        assert list(temp.glob("sft-serve-*")), "the server keeps its working folder under TMPDIR"
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stopped(proc, temp)


def client(base_url, key=KEY):
    from openai import OpenAI

    return OpenAI(base_url=base_url, api_key=key, timeout=120, max_retries=0)


def test_models_lists_the_served_name(tiny_server):
    assert [m.id for m in client(tiny_server).models.list().data] == ["local"]


def test_wrong_or_missing_key_is_refused(tiny_server):
    import openai

    with pytest.raises(openai.AuthenticationError):
        client(tiny_server, key="wrong").models.list()
    with pytest.raises(openai.AuthenticationError):
        client(tiny_server, key="wrong").chat.completions.create(model="local", messages=MESSAGES, max_tokens=2)


def test_plain_and_streaming_replies_are_the_greedy_reply_of_the_training_prompt(tiny_server, tiny_model_dir):
    """The server renders the chat as training did: same prompt token count, and at temperature 0 the
    random model's reply (which any change of prompt would change) equals our own greedy generation."""
    model, tokenizer = load_folder(tiny_model_dir)
    [expected], _ = generate(model, tokenizer, [MESSAGES], max_new_tokens=8, batch_size=1)
    [ids] = prompt_ids(tokenizer, [MESSAGES])

    plain = client(tiny_server).chat.completions.create(model="local", messages=MESSAGES, max_tokens=8,
                                                       temperature=0)
    assert plain.usage.prompt_tokens == len(ids)
    assert plain.choices[0].message.content == expected

    stream = client(tiny_server).chat.completions.create(model="local", messages=MESSAGES, max_tokens=8,
                                                        temperature=0, stream=True)
    chunks = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(chunks) > 1 and "".join(chunks) == expected


def test_wider_binding_needs_a_key(tiny_model_dir):
    proc = start([sys.executable, "-m", "apps.serve", "--model", str(tiny_model_dir), "--host", "0.0.0.0",
                  "--port", str(free_port())], env={"SERVE_API_KEY": ""})
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        stop(proc)
    assert proc.returncode == 2 and "set an API key in the environment (SERVE_API_KEY=...)" in out


@pytest.fixture(scope="module")
def smollm_server(smollm_dir, tmp_path_factory):
    port, temp = free_port(), tmp_path_factory.mktemp("serve-tmp")
    proc = serve(smollm_dir, port, temp)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v1/models", proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stopped(proc, temp)


@pytest.mark.slow
def test_the_real_model_stops_at_its_end_of_turn(smollm_server):
    reply = client(smollm_server, key="none").chat.completions.create(
        model="local", messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=64, temperature=0)
    choice = reply.choices[0]
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop" and reply.usage.completion_tokens < 64  # stopped at <|im_end|>
    assert "<|im_end|>" not in choice.message.content


def prepared_split(folder):
    folder.mkdir(parents=True, exist_ok=True)
    record = {"id": 0, "prompt": [{"role": "system", "content": "You are a helpful assistant."},
                                  {"role": "user", "content": "What is the capital of France?"}],
              "completion": [{"role": "assistant", "content": "Paris."}], "references": {}}
    (folder / "test.jsonl").write_text(json.dumps(record) + "\n")
    return folder


def bot_text(browser):
    """The bot messages' text, read in one script: streaming re-renders the message elements, so a
    handle found first and read later can be gone by then (a StaleElementReferenceException)."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll(\".bot, .message.bot, [data-testid='bot']\"))"
        ".map(e => e.innerText).join(' ');")


@pytest.mark.slow
def test_chat_page_streams_an_answer_in_headless_chromium(smollm_server, tmp_path):
    chromium, driver = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver")
    if not (os.path.exists(chromium) and driver):
        pytest.skip("Debian packages chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    page = start([sys.executable, "-m", "apps.chat", "--endpoint", smollm_server, "--data",
                  str(prepared_split(tmp_path / "data")), "--port", str(port)],
                 env={"GRADIO_ANALYTICS_ENABLED": "False"})
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,800"):
        options.add_argument(flag)
    browser = None
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", page, seconds=120)
        browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
        browser.set_page_load_timeout(60)
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 90)
        box = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "textarea"))
        # The task's system prompt is on the page, from the prepared split.
        assert "You are a helpful assistant." in browser.page_source
        box.send_keys("What is the capital of France?")
        box.send_keys(Keys.ENTER)
        wait.until(lambda b: "Paris" in bot_text(b))
        time.sleep(1)
        browser.save_screenshot(str(tmp_path / "chat.png"))
        if os.environ.get("CHAT_SCREENSHOT"):  # the README's picture: CHAT_SCREENSHOT=docs/chat.png
            shutil.copy(tmp_path / "chat.png", ROOT / os.environ["CHAT_SCREENSHOT"])
        assert (tmp_path / "chat.png").stat().st_size > 10_000
    finally:
        if browser is not None:
            browser.quit()
        stop(page)


def test_a_bounded_load_is_answered_whole_and_unmixed(tiny_server, tiny_model_dir):
    """8 concurrent clients, 40 requests, 5 minutes at most: every request answered, each with the
    reply its own prompt gets alone (bench/serve_load.py measures the real model the same way)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from serve_load import load

    prompts = [[{"role": "user", "content": f"Write a query for table t{i}."}] for i in range(8)]
    figures = load(tiny_server, "local", prompts, clients=8, requests=40, max_tokens=8, limit=300, key=KEY)
    print(f"load on the tiny model: {figures}")
    assert figures["answered"] == 40 and figures["unfinished"] == 0 and figures["failed"] == 0, figures
    assert figures["replies_not_as_alone"] == 0, figures
    assert figures["latency_p50"] <= figures["latency_p90"] <= figures["latency_max"]


def test_serve_with_llamacpp_asked_for_but_not_installed_says_how_in_one_line(monkeypatch, tmp_path):
    from apps import serve
    from sft import llamacpp

    monkeypatch.setattr(llamacpp, "missing", lambda: "llama-cpp-python is not installed; make export")
    with pytest.raises(UserError, match="--backend llamacpp: llama-cpp-python is not installed"):
        serve.llamacpp_app(tmp_path, "local", None, serve.Limits())


def test_make_serve_takes_llama_cpp_on_a_cpu_where_installed(monkeypatch):
    from sft import device

    monkeypatch.setattr(device, "has_cuda", lambda: False)
    monkeypatch.setattr(device, "has_llamacpp", lambda: True)
    assert device.serving_backend() == "llamacpp"
    monkeypatch.setattr(device, "has_llamacpp", lambda: False)
    assert device.serving_backend() == "transformers"
    monkeypatch.setattr(device, "has_cuda", lambda: True)
    monkeypatch.setattr(device, "has_vllm", lambda: True)
    assert device.serving_backend() == "vllm"


def raw_request(base_url, path, body=None, headers=None):
    """Status and body of a request as a browser page might send it (urllib, no client library)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(base_url.removesuffix("/v1") + path, data=body, headers=headers or {},
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


def test_a_foreign_page_rebound_host_or_oversized_request_is_refused_by_the_served_app(tiny_server):
    body = json.dumps({"model": "local", "messages": MESSAGES, "max_tokens": 2}).encode()
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    assert raw_request(tiny_server, "/v1/chat/completions", body, auth)[0] == 200
    assert raw_request(tiny_server, "/v1/chat/completions", body, {**auth, "Origin": "https://evil.example"})[0] == 403
    assert raw_request(tiny_server, "/v1/chat/completions", body, {**auth, "Host": "evil.example"})[0] == 421
    over = json.dumps({"model": "local", "messages": MESSAGES, "max_tokens": 10**6}).encode()
    assert raw_request(tiny_server, "/v1/chat/completions", over, auth)[0] == 400
    assert raw_request(tiny_server, "/v1/chat/completions", b"x" * 2_000_000, auth)[0] == 413
    for path in ("/load_model", "/reset", "/v1/responses", "/extras/tokenize", "/v1/embeddings", "/docs"):
        assert raw_request(tiny_server, path, json.dumps({"model": "/etc", "input": "x"}).encode(), auth)[0] == 404
    assert raw_request(tiny_server, "/health", None, auth)[0] == 200
    for field, value in [("max_tokens", 0), ("max_tokens", -1), ("max_completion_tokens", 0),
                         ("generation_config", '{"max_new_tokens": 5000}'), ("stop", ["x"] * 1000)]:
        asked = json.dumps({"model": "local", "messages": MESSAGES, field: value}).encode()
        assert raw_request(tiny_server, "/v1/chat/completions", asked, auth)[0] == 400, field
    # The other spelling of the reply's length reaches the backend as the one it reads.
    capped = json.dumps({"model": "local", "messages": MESSAGES, "max_completion_tokens": 3}).encode()
    status, answer = raw_request(tiny_server, "/v1/chat/completions", capped, auth)
    assert status == 200 and json.loads(answer)["usage"]["completion_tokens"] <= 3


@pytest.mark.parametrize("args", [["--host", "0.0.0.0"], ["--share"]])
def test_a_chat_page_beyond_loopback_needs_a_login(args, tmp_path):
    proc = start([sys.executable, "-m", "apps.chat", "--data", str(tmp_path), *args], env={"CHAT_AUTH": ""})
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        stop(proc)
    assert proc.returncode == 2 and "CHAT_AUTH=user:password" in out and "Traceback" not in out


def test_a_chat_login_comes_from_the_environment(monkeypatch):
    from apps.chat import page_auth

    monkeypatch.setenv("CHAT_AUTH", "ana:pa:ss")
    assert page_auth("0.0.0.0", False, "CHAT_AUTH") == [("ana", "pa:ss")]
    assert page_auth("127.0.0.1", False, "CHAT_AUTH") is None


def test_vllm_answers_only_the_served_hosts_origins():
    from apps.gate import Limits
    from apps.serve import vllm_command

    command = vllm_command("m", "local", "127.0.0.1", 8080, Limits(hosts=("127.0.0.1", "::1")), 8192)
    origins = json.loads(command[command.index("--allowed-origins") + 1])
    assert "http://127.0.0.1:8080" in origins and "http://[::1]:8080" in origins and "*" not in origins


def test_vllm_serve_reserves_the_context_asked_for_and_no_images(tmp_path):
    """Gemma 3 4B is an image-text model with a 128k context: unconfigured, vLLM sizes its KV cache
    for 128k tokens and profiles the vision tower, more than a 24 GB card holds."""
    from apps.gate import Limits
    from apps.serve import vllm_command

    (tmp_path / "pin.json").write_text(json.dumps({"model_class": "AutoModelForImageTextToText"}))
    command = vllm_command(str(tmp_path), "local", "127.0.0.1", 8080, Limits(), 4096)
    assert "--max-model-len=4096" in command and '--limit-mm-per-prompt={"image": 0}' in command
    (tmp_path / "pin.json").write_text(json.dumps({"model_class": "AutoModelForCausalLM"}))
    assert not any(a.startswith("--limit-mm") for a in vllm_command(str(tmp_path), "l", "127.0.0.1", 1, Limits(), 9))


def test_the_chat_page_sends_what_the_gate_takes_whatever_form_gradio_keeps_history_in():
    from apps.chat import reply_stream
    from apps.fields import messages

    sent = []

    class Client:
        class chat:  # noqa: N801 - the openai client's shape
            class completions:  # noqa: N801
                @staticmethod
                def create(**request):
                    sent.append(request)
                    return iter(())

    history = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": [{"type": "text", "text": "a1"}]},
               {"role": "user", "content": {"type": "text", "text": "q2"}, "metadata": {}}, {"role": "assistant", "content": ["a2"]}]
    list(reply_stream(Client, "local")("q3", history, "Reply with SQL.", 0.0))
    assert messages(sent[0]["messages"]) is None
    assert [m["content"] for m in sent[0]["messages"]] == ["Reply with SQL.", "q1", "a1", "q2", "a2", "q3"]
