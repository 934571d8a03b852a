"""serve: the merged model on an OpenAI-compatible endpoint (not a DVC stage; `make serve`).

    python -m apps.serve --model models/merged --name local --host 127.0.0.1 --port 8080

On a machine with a CUDA GPU and vllm installed it runs `vllm serve` (continuous batching,
paged attention). On a CPU with llama.cpp installed (make llamacpp) it converts the model to a
GGUF at its own precision and runs llama-cpp-python's OpenAI-compatible server (faster here:
bench/results/generate.json); without llama.cpp, transformers' own server (`transformers
serve`). Both are FastAPI apps run by uvicorn, pinned to the one model, behind apps.gate: the
model is listed under `--name` on /v1/models, an API key can be required, and requests from other
web pages (a foreign Origin or Host), oversized bodies, replies over --max-tokens and generations
past --max-in-flight are refused.

Bound to 127.0.0.1 by default. Binding anything wider needs an API key: set the environment
variable named by --api-key-env (default SERVE_API_KEY); clients send `Authorization: Bearer
<key>`. The key never goes on a command line (where `ps` shows it) or into a file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from apps.gate import LOOPBACK, Gate, HeadersInTime, Limits
from sft.device import GENERATION_BACKENDS, serving_backend
from sft.generation import vllm_engine_args
from sft.params import UserError, run

SERVED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def vllm_command(model: str, name: str, host: str, port: int, limits: Limits, max_model_len: int) -> list[str]:
    # vllm reads the key from VLLM_API_KEY itself; it is not put on the command line. Its own CORS
    # answers only the hosts served and its scheduler queues generations; the Host check and the
    # body and max_tokens caps are the gate's, on the CPU backends only.
    origins = [f"{scheme}://{h if ':' not in h else f'[{h}]'}:{port}" for h in limits.hosts for scheme in ("http", "https")]
    engine = [f"--{k.replace('_', '-')}={json.dumps(v) if isinstance(v, dict) else v}"
              for k, v in vllm_engine_args(model, max_model_len).items()]
    return ["vllm", "serve", model, "--served-model-name", name, "--host", host, "--port", str(port),
            "--generation-config", "auto", "--allowed-origins", json.dumps(origins), *engine]


def transformers_app(model: Path, name: str, api_key: str | None, limits: Limits):
    """transformers' server pinned to the model under `name`: requests name the model `name`,
    and a link called `name` in a private working folder points at the model folder."""
    from transformers.cli.serve import Serve

    class Unstarted(Serve):
        def start_server(self):  # build the app only; uvicorn is run below, around the wrapper
            pass

    workdir = Path(tempfile.mkdtemp(prefix="sft-serve-"))
    (workdir / name).symlink_to(model.resolve(), target_is_directory=True)
    os.chdir(workdir)
    serve = Unstarted(force_model=name, device="auto", dtype="auto", non_blocking=True, log_level="warning")
    return Gate(serve.server.config.app, name, api_key, limits), workdir


def llamacpp_app(model: Path, name: str, api_key: str | None, limits: Limits):
    """llama-cpp-python's server on the model converted to a GGUF (its chat template, eos and
    end-of-turn tokens inside) in a private working folder."""
    from sft import llamacpp

    if (why := llamacpp.missing()) is not None:
        raise UserError(f"--backend llamacpp: {why}")
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    workdir = Path(tempfile.mkdtemp(prefix="sft-serve-"))
    gguf = llamacpp.own_precision(model, workdir, name=name)
    print(f"[serve] llama.cpp on the CPU: {model} converted to {gguf.name}", flush=True)
    settings = ModelSettings(model=str(gguf), model_alias=name, n_ctx=4096, seed=0, verbose=False,
                             n_threads=len(os.sched_getaffinity(0)))
    app = create_app(server_settings=ServerSettings(), model_settings=[settings])
    return Gate(app, name, api_key, limits), workdir


def main() -> None:
    ap = argparse.ArgumentParser(description="Serve a model folder on an OpenAI-compatible endpoint.")
    ap.add_argument("--model", default="models/merged")
    ap.add_argument("--name", default="local", help="the model name clients ask for")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--api-key-env", default="SERVE_API_KEY", help="environment variable holding the API key")
    ap.add_argument("--backend", default="auto", choices=GENERATION_BACKENDS,
                    help="auto: vLLM on a CUDA GPU, llama.cpp on a CPU where installed, else transformers")
    ap.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                    help="a host name clients reach the server by, beyond loopback and --host (repeatable)")
    ap.add_argument("--max-tokens", type=int, default=Limits.max_tokens, help="the most tokens one reply may ask for")
    ap.add_argument("--max-in-flight", type=int, default=Limits.max_in_flight,
                    help="generations at once; more are answered 429")
    ap.add_argument("--max-seconds", type=float, default=Limits.max_seconds,
                    help="the longest one request may take, body and reply; then it is stopped")
    ap.add_argument("--max-model-len", type=int, default=8192,
                    help="vLLM: the longest prompt and reply it reserves memory for (not the model's own context)")
    args = ap.parse_args()

    model = Path(args.model)
    if not (model / "config.json").is_file():
        raise UserError(f"{model} holds no model; run the pipeline first (make repro) or pass --model")
    api_key = os.environ.get(args.api_key_env) or None
    if args.host not in LOOPBACK and not api_key:
        raise UserError(f"--host {args.host} reaches beyond this machine: set an API key in the environment "
                        f"({args.api_key_env}=...) or keep --host 127.0.0.1")
    if args.max_tokens < 1 or args.max_in_flight < 1 or not 0 < args.max_seconds < float("inf"):
        raise UserError("--max-tokens, --max-in-flight and --max-seconds must be positive")
    if not SERVED_NAME.fullmatch(args.name):
        raise UserError(f"--name {args.name[:80]!r}: a served name is letters, digits, '.', '_' and '-' (at most 64, "
                        "not starting with '.' or '-'); it names a link in the server's working folder, never a path")
    named = [h.lower() for h in (args.host, *args.allow_host) if h not in ("0.0.0.0", "::", "")]
    limits = Limits(hosts=tuple(dict.fromkeys((*LOOPBACK, *named))), max_tokens=args.max_tokens,
                    max_in_flight=args.max_in_flight, max_seconds=args.max_seconds)
    print(f"[serve] {model} as '{args.name}' on http://{args.host}:{args.port}/v1"
          f"{' (API key required)' if api_key else ''}", flush=True)
    backend = serving_backend() if args.backend == "auto" else args.backend
    if backend == "vllm":
        env = {**os.environ, **({"VLLM_API_KEY": api_key} if api_key else {})}
        os.execvpe("vllm", vllm_command(str(model), args.name, args.host, args.port, limits, args.max_model_len), env)

    import uvicorn

    app, workdir = (llamacpp_app if backend == "llamacpp" else transformers_app)(model, args.name, api_key, limits)
    # uvicorn shuts down on SIGTERM, then raises the signal again under the handler it found. Python's
    # default handler would end the process there, past the `finally`, leaving the working folder
    # (a whole GGUF for llama.cpp) behind at every `kill`; this one unwinds through it.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", http=HeadersInTime,
                    limit_concurrency=limits.max_connections)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    run(main)
