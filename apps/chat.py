"""chat: a small gradio page that talks to the served model (`make chat`; not a DVC stage).

    python -m apps.chat --endpoint http://127.0.0.1:8080/v1 --model local

Talks to the OpenAI-compatible endpoint of `make serve` through the `openai` client and streams
the reply. The system prompt is the task's own (from the prepared test split, as trained), a
few test questions are offered as examples, and temperature starts at 0 (greedy, as evaluated).
Bound to 127.0.0.1:7860; no public gradio share link unless --share is given. The page calls the
server with the user's key, so beyond loopback or with --share it asks for a login (gradio's own),
the `user:password` in the environment variable named by --auth-env (default CHAT_AUTH).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from apps.gate import LOOPBACK
from sft.files import read_jsonl
from sft.params import UserError, run


def task_prompts(data: Path, examples: int) -> tuple[str, list[str]]:
    """The system message training used, and the first test questions (user messages)."""
    test = data / "test.jsonl"
    if not test.is_file():
        raise UserError(f"{test} is missing; run the pipeline first (make repro) or pass --data")
    records = read_jsonl(test)[:examples]
    system = next((m["content"] for m in records[0]["prompt"] if m["role"] == "system"), "") if records else ""
    questions = [next(m["content"] for m in r["prompt"] if m["role"] == "user") for r in records]
    return system, questions


def page_auth(host: str, share: bool, auth_env: str) -> list[tuple[str, str]] | None:
    """The login a page reachable beyond this machine needs (None on loopback without --share)."""
    if host in LOOPBACK and not share:
        return None
    user, _, password = (os.environ.get(auth_env) or "").partition(":")
    if not user or not password:
        reach = "--share opens it to the internet" if share else f"--host {host} reaches beyond this machine"
        raise UserError(f"{reach} and the page calls the server with your key: set a login in the environment "
                        f"({auth_env}=user:password) or keep --host 127.0.0.1 without --share")
    return [(user, password)]


def as_text(content) -> str:
    """A history message's content as text: gradio may keep it as parts ({"type": "text", ...}),
    and the server takes text only."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else [content]
    return "".join(p if isinstance(p, str) else p.get("text", "") if isinstance(p, dict) else "" for p in parts)


def reply_stream(client, model: str):
    """The chat function: yields the reply as it grows, token by token from the server."""

    def respond(message: str, history: list[dict], system: str, temperature: float):
        messages = ([{"role": "system", "content": system}] if system.strip() else [])
        messages += [{"role": m["role"], "content": as_text(m["content"])} for m in history]
        messages.append({"role": "user", "content": message})
        stream = client.chat.completions.create(model=model, messages=messages, temperature=temperature,
                                                max_tokens=512, stream=True)
        text = ""
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                yield text

    return respond


def page(client, model: str, system: str, examples: list[str]):
    import gradio as gr

    return gr.ChatInterface(
        reply_stream(client, model),
        title="sft-pipeline chat",
        description=f"Model `{model}` at {client.base_url}. Greedy at temperature 0, as evaluated.",
        additional_inputs=[gr.Textbox(system, label="System prompt (the task's, as trained)", lines=3),
                           gr.Slider(0.0, 1.5, value=0.0, step=0.1, label="Temperature")],
        examples=[[q, system, 0.0] for q in examples],
        run_examples_on_click=False,
        flagging_mode="never",
        save_history=False,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description="Chat with the served model in the browser.")
    ap.add_argument("--endpoint", default="http://127.0.0.1:8080/v1")
    ap.add_argument("--model", default="local")
    ap.add_argument("--data", default="data/prepared", help="prepared splits: the system prompt and examples")
    ap.add_argument("--examples", type=int, default=3)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--share", action="store_true", help="open a public gradio link (exposes the model)")
    ap.add_argument("--api-key-env", default="SERVE_API_KEY")
    ap.add_argument("--auth-env", default="CHAT_AUTH", help="environment variable holding user:password")
    args = ap.parse_args()
    auth = page_auth(args.host, args.share, args.auth_env)

    from openai import OpenAI

    system, examples = task_prompts(Path(args.data), args.examples)
    # The openai client insists on a key; a loopback server without one ignores it.
    client = OpenAI(base_url=args.endpoint, api_key=os.environ.get(args.api_key_env) or "none")
    page(client, args.model, system, examples).launch(server_name=args.host, server_port=args.port,
                                                      share=args.share, auth=auth)


if __name__ == "__main__":
    run(main)
