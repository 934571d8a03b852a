"""serve: the merged model on an OpenAI-compatible endpoint (not a DVC stage; `make serve`).

    python -m apps.serve --model models/merged --name local --host 127.0.0.1 --port 8080

On a machine with a CUDA GPU and vllm installed it runs `vllm serve` (continuous batching,
paged attention). On a CPU with llama.cpp installed (make llamacpp) it converts the model to a
GGUF at its own precision and runs llama-cpp-python's OpenAI-compatible server (faster here:
bench/results/generate.json); without llama.cpp, transformers' own server (`transformers
serve`). Both are FastAPI apps run by uvicorn, pinned to the one model, with two thin additions:
the model is listed under `--name` on /v1/models, and an API key can be required.

Bound to 127.0.0.1 by default. Binding anything wider needs an API key: set the environment
variable named by --api-key-env (default SERVE_API_KEY); clients send `Authorization: Bearer
<key>`. The key never goes on a command line (where `ps` shows it) or into a file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from sft.device import serving_backend
from sft.params import UserError, run

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def vllm_command(model: str, name: str, host: str, port: int) -> list[str]:
    # vllm reads the key from VLLM_API_KEY itself; it is not put on the command line.
    return ["vllm", "serve", model, "--served-model-name", name, "--host", host, "--port", str(port),
            "--generation-config", "auto"]


class ModelAlias:
    """ASGI wrapper: /v1/models names the pinned model as clients call it, and with a key set
    every request must carry it. Everything else goes to transformers' server untouched."""

    def __init__(self, app, name: str, api_key: str | None):
        self.app, self.name, self.api_key = app, name, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            if self.api_key and dict(scope["headers"]).get(b"authorization") != f"Bearer {self.api_key}".encode():
                return await self.reply(send, 401, {"error": {"message": "missing or wrong API key",
                                                              "type": "invalid_request_error"}})
            if scope["path"].rstrip("/") == "/v1/models" and scope["method"] == "GET":
                return await self.reply(send, 200, {"object": "list", "data": [
                    {"id": self.name, "object": "model", "created": int(time.time()), "owned_by": "sft-pipeline"}]})
        return await self.app(scope, receive, send)

    @staticmethod
    async def reply(send, status: int, body: dict):
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})


def transformers_app(model: Path, name: str, api_key: str | None):
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
    return ModelAlias(serve.server.config.app, name, api_key), workdir


def llamacpp_app(model: Path, name: str, api_key: str | None):
    """llama-cpp-python's server on the model converted to a GGUF (its chat template, eos and
    end-of-turn tokens inside) in a private working folder."""
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    from sft import llamacpp

    workdir = Path(tempfile.mkdtemp(prefix="sft-serve-"))
    config = json.loads((model / "config.json").read_text())
    outtype = llamacpp.OUTTYPE_OF_DTYPE.get(config.get("dtype") or config.get("torch_dtype"), "f16")
    gguf = llamacpp.convert(model, workdir / llamacpp.gguf_name(outtype), outtype, name)
    print(f"[serve] llama.cpp on the CPU: {model} converted to {gguf.name}", flush=True)
    settings = ModelSettings(model=str(gguf), model_alias=name, n_ctx=4096, seed=0, verbose=False,
                             n_threads=len(os.sched_getaffinity(0)))
    return ModelAlias(create_app(server_settings=ServerSettings(), model_settings=[settings]), name, api_key), workdir


def main() -> None:
    ap = argparse.ArgumentParser(description="Serve a model folder on an OpenAI-compatible endpoint.")
    ap.add_argument("--model", default="models/merged")
    ap.add_argument("--name", default="local", help="the model name clients ask for")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--api-key-env", default="SERVE_API_KEY", help="environment variable holding the API key")
    ap.add_argument("--backend", default="auto", choices=("auto", "vllm", "llamacpp", "transformers"),
                    help="auto: vLLM on a CUDA GPU, llama.cpp on a CPU where installed, else transformers")
    args = ap.parse_args()

    model = Path(args.model)
    if not (model / "config.json").is_file():
        raise UserError(f"{model} holds no model; run the pipeline first (make repro) or pass --model")
    api_key = os.environ.get(args.api_key_env) or None
    if args.host not in LOOPBACK and not api_key:
        raise UserError(f"--host {args.host} reaches beyond this machine: set an API key in the environment "
                        f"({args.api_key_env}=...) or keep --host 127.0.0.1")
    print(f"[serve] {model} as '{args.name}' on http://{args.host}:{args.port}/v1"
          f"{' (API key required)' if api_key else ''}", flush=True)
    backend = serving_backend() if args.backend == "auto" else args.backend
    if backend == "vllm":
        env = {**os.environ, **({"VLLM_API_KEY": api_key} if api_key else {})}
        os.execvpe("vllm", vllm_command(str(model), args.name, args.host, args.port), env)

    import uvicorn

    app, workdir = (llamacpp_app if backend == "llamacpp" else transformers_app)(model, args.name, api_key)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    run(main)
