"""llama.cpp: a model folder converted to GGUF with llama.cpp's own converter, quantized with its
own quantizer, and run through llama-cpp-python (greedy replies, next-token log-probabilities).

The converter (`convert_hf_to_gguf.py`, with its `conversion/` and `gguf-py/`) ships in the
llama-cpp-python source distribution, not in the installed package: `make export` installs that
distribution and copies the converter to `.venv/share/llama.cpp/` (or set LLAMA_CPP_CONVERTER to
a folder holding `convert_hf_to_gguf.py`).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

from sft.params import UserError

# What llama.cpp's converter writes itself; the k-quants are made from its f16 output.
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
QUANTIZED_TYPES = {"q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k_m": 12, "q4_k_s": 14,
                   "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18}  # llama.cpp's LLAMA_FTYPE_MOSTLY_*
OUTTYPES = (*CONVERTER_TYPES, *QUANTIZED_TYPES)
OUTTYPE_OF_DTYPE = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}  # a model at its own precision
INSTALL = "make export (installs llama-cpp-python and its converter into .venv, then runs the stage)"


def missing() -> str | None:
    """Why llama.cpp cannot run here, in one line, or None."""
    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed; {INSTALL}"
    if converter() is None:
        return f"llama.cpp's converter (convert_hf_to_gguf.py) is not found; {INSTALL}"
    return None


def converter() -> Path | None:
    folder = Path(os.environ.get("LLAMA_CPP_CONVERTER") or Path(sys.prefix) / "share" / "llama.cpp")
    script = folder / "convert_hf_to_gguf.py"
    return script if script.is_file() else None


def gguf_name(outtype: str) -> str:
    return f"model-{outtype}.gguf"


def convert(model_dir: Path, out_file: Path, outtype: str, name: str = "model") -> Path:
    """`model_dir` as one GGUF of `outtype`; its chat template and special tokens go in with it.
    `name` is the GGUF's general.name (the converter would take the folder's name: not reproducible)."""
    if outtype not in OUTTYPES:
        raise UserError(f"params.yaml: export.outtype is '{outtype}'; use one of {', '.join(OUTTYPES)}")
    direct = outtype if outtype in CONVERTER_TYPES else "f16"
    first = out_file if direct == outtype else out_file.with_suffix(".f16.gguf")
    cmd = [sys.executable, str(converter()), str(model_dir), "--outfile", str(first), "--outtype", direct,
           "--model-name", name]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"llama.cpp's converter failed on {model_dir}: {done.stderr.strip().splitlines()[-1:]}")
    if first != out_file:
        quantize(first, out_file, outtype)
        first.unlink()
    return out_file


def own_precision(model_dir: Path, folder: Path, dtype: str | None = None, name: str = "model") -> Path:
    """The model as a GGUF at its own precision (`dtype`; None: its config's, f16 if it names none),
    in `folder`: what llama.cpp generates and serves with when no quantized type was asked for."""
    if dtype is None:
        import json

        config = json.loads((model_dir / "config.json").read_text())
        dtype = config.get("dtype") or config.get("torch_dtype")
    outtype = OUTTYPE_OF_DTYPE.get(dtype, "f16")
    return convert(model_dir, folder / gguf_name(outtype), outtype, name)


def quantize(source: Path, out_file: Path, outtype: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTIZED_TYPES[outtype]
    params.nthread = len(os.sched_getaffinity(0))
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out_file).encode(), params) != 0:
        raise UserError(f"llama.cpp could not quantize {source} to {outtype}")


def load(gguf: Path, n_ctx: int, all_logits: bool = True):
    """The GGUF in llama.cpp; `all_logits` keeps every position's logits (the parity check needs
    them; generation alone does not)."""
    from llama_cpp import Llama

    return Llama(model_path=str(gguf), n_ctx=n_ctx, n_batch=min(n_ctx, 512), logits_all=all_logits, seed=0,
                 n_threads=len(os.sched_getaffinity(0)), verbose=False)


def next_token_logprobs(llm, prompt: list[int], cont: list[int]):
    """llama.cpp's log-probabilities of the next token at each position of `cont` (float64)."""
    import torch

    llm.reset()
    llm.eval(prompt + cont)
    logits = torch.from_numpy(llm.scores[len(prompt) - 1:len(prompt) + len(cont) - 1].copy())
    return torch.log_softmax(logits.double(), dim=-1)


def reply(llm, ids: list[int], max_new_tokens: int) -> tuple[str, int, bool]:
    """Greedy reply to prompt token ids: its text, its token count, and whether it ended at an
    end-of-generation token of the GGUF (eos or end of turn) rather than at the length limit."""
    llm.reset()
    out = llm.create_completion(prompt=ids, max_tokens=max_new_tokens, temperature=0.0, top_k=1, seed=0)
    choice = out["choices"][0]
    stopped = choice["finish_reason"] == "stop"
    # The end-of-generation token is generated but not counted by llama.cpp; transformers counts it.
    return choice["text"], out["usage"]["completion_tokens"] + stopped, stopped


def generate(llm, ids: list[list[int]], max_new_tokens: int, label: str = "generating") -> tuple[list[str], dict]:
    """llama.cpp backend: greedy replies, one prompt at a time, and throughput figures
    (sft.generation.replies is the entry point)."""
    from sft.progress import Progress, throughput

    started, rows = time.time(), []
    with Progress(len(ids), label) as progress:
        for prompt in ids:
            rows.append(reply(llm, prompt, max_new_tokens))
            progress.update(1, rows[-1][1])
    return [text for text, _, _ in rows], throughput(sum(n for _, n, _ in rows), time.time() - started)
