"""The same bytes on another CPU: a few LoRA steps of a small Llama, run in fresh processes as the
stages run, hash the same with ATen, MKL and oneDNN capped at AVX2 (a CPU without AVX-512 or
AMX, simulated) as on this CPU, and with any thread count, once sft/numerics.py has pinned them."""

import os
import subprocess
import sys

import pytest
from conftest import AVX2_CPU

from sft.numerics import OPT_OUT, PINS, pin_numerics

STEPS = """
import hashlib, sys
import sft  # the stages' first import: it pins the numerics before torch loads
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
config = LlamaConfig(hidden_size=192, intermediate_size=512, num_hidden_layers=2, num_attention_heads=3,
                     num_key_value_heads=1, vocab_size=8192, max_position_embeddings=256)
model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=8, target_modules="all-linear", init_lora_weights="gaussian"))
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
ids = torch.randint(0, 8192, (4, 96), generator=torch.Generator().manual_seed(1))
for _ in range(2):
    model(input_ids=ids, labels=ids).loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
digest = hashlib.sha256()
for name, tensor in sorted(model.state_dict().items()):
    digest.update(tensor.numpy().tobytes())
print(torch.backends.cpu.get_cpu_capability(), digest.hexdigest())
"""


def trained_hash(threads: int = 2, **env: str) -> tuple[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in {*PINS, *AVX2_CPU, OPT_OUT}}
    done = subprocess.run([sys.executable, "-c", STEPS, str(threads)], env={**clean, **env},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    capability, digest = done.stdout.split()[-2:]
    return capability, digest


def has_avx512() -> bool:
    return "avx512f" in open("/proc/cpuinfo").read()


def test_pinning_sets_every_variable_and_native_opts_out():
    environ = {}
    assert pin_numerics(environ) == PINS and environ == PINS
    assert pin_numerics({OPT_OUT: "1"}) == {}
    assert os.environ["MKL_CBWR"] == "AVX2,STRICT"  # importing sft (conftest did) pinned this process


@pytest.mark.skipif(not has_avx512(), reason="this CPU has no AVX-512: an AVX2 CPU cannot be simulated on it")
def test_an_avx2_cpu_trains_the_same_bytes_as_this_one_once_pinned():
    native, capped = trained_hash(**{OPT_OUT: "1"}), trained_hash(**{OPT_OUT: "1"}, **AVX2_CPU)
    assert native[0] == "AVX512" and capped[0] == "AVX2"
    assert native[1] != capped[1], "unpinned, the simulated CPU should train other bytes: the simulation is idle"
    assert trained_hash() == trained_hash(**AVX2_CPU)


def test_the_thread_count_does_not_change_the_bytes():
    assert trained_hash(threads=1) == trained_hash(threads=2) == trained_hash(threads=4)
