"""The numeric environment of every stage: the same bytes on any x86-64 CPU with AVX2.

torch's CPU build picks its kernels by what the CPU has: MKL's GEMM branch, ATen's vector width
(AVX2 or AVX-512) and oneDNN's ISA (AMX for bf16). Each changes the order of float additions,
so training on an AVX-512 laptop and on an AVX2 one gave different checkpoints (and a different
dvc.lock) with the same figures. Pinned here, before torch loads any of them:
- MKL_CBWR=AVX2,STRICT: MKL's AVX2 branch in strict conditional-reproducibility mode, which also
  makes its results independent of the thread count (measured: 1, 2 and 4 threads, same bytes);
- ATEN_CPU_CAPABILITY=avx2: ATen's AVX2 kernels even where AVX-512 is present;
- ONEDNN_MAX_CPU_ISA=AVX2: oneDNN (bf16 matmuls, convolutions) without AVX-512 or AMX.
SFT_NATIVE_CPU=1 leaves the CPU's own choices (faster on AVX-512; bytes then follow the CPU).

Half precision on a CPU (bfloat16, float16: opt-in, by params) is the exception: oneDNN capped at
AVX2 emulates it, ~100x slower than float32. native_half_kernels() lifts oneDNN's cap alone, in the
process that asks, before its first half-precision product; float32 stays on pinned MKL and ATen.
Half-precision bytes then follow the CPU (AMX and AVX512-BF16 round differently), as they would.
"""

from __future__ import annotations

import os

PINS = {"MKL_CBWR": "AVX2,STRICT", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
OPT_OUT = "SFT_NATIVE_CPU"


def pin_numerics(environ=os.environ) -> dict[str, str]:
    """Sets the pins in `environ` (before torch is imported: each library reads its variable once,
    when it first runs) and returns what was set; nothing with SFT_NATIVE_CPU=1."""
    if environ.get(OPT_OUT) == "1":
        return {}
    environ.update(PINS)
    return dict(PINS)


def native_half_kernels(environ=os.environ) -> None:
    """oneDNN's own ISA (AMX, AVX512-BF16) for this process: it reads ONEDNN_MAX_CPU_ISA once, at its
    first use, so this must come before any half-precision product here."""
    environ.pop("ONEDNN_MAX_CPU_ISA", None)
