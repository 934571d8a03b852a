"""Which device and which backend: the one place that asks whether there is a CUDA GPU.

Everything that only a GPU can do falls back here with one line, never a traceback.
"""

from __future__ import annotations

import importlib.util
import os
import resource

from sft.params import UserError

GENERATION_BACKENDS = ("auto", "transformers", "vllm", "llamacpp")


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def has_vllm() -> bool:
    return importlib.util.find_spec("vllm") is not None


def has_llamacpp() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


# /proc/cpuinfo's flags for a CPU's own half-precision matrix instructions.
NATIVE_HALF_FLAGS = {"bfloat16": ("amx_bf16", "avx512_bf16"), "float16": ("amx_fp16", "avx512_fp16")}


def native_half_cpu(dtype: str, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU's instructions for `dtype` matrix products (AMX or AVX-512), by their flag, or None:
    without them oneDNN emulates the type, ~100x slower than float32 (measured: 2.4 against 390
    GFLOP/s for bf16 on an AMD EPYC with avx512_bf16, pinned and not)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    return next((flag for flag in NATIVE_HALF_FLAGS.get(dtype, ()) if flag in flags), None)


def inference_device() -> str:
    """Where the stages that only run a model (select, merge, evaluate) load it: the GPU when there
    is one. Training leaves placement to the Trainer, which knows each process's own device."""
    return "cuda" if has_cuda() else "cpu"


def given_cpus() -> int:
    """The CPUs this run was given: SFT_CPUS (set by `make sweep JOBS=n` for each of its
    experiments, or by hand), else Slurm's --cpus-per-task where Slurm started it (a node may hold
    other jobs, and a cluster without CPU binding pins nothing), else the CPUs this process may run
    on. Never more than those: threads beyond the cores spin against each other."""
    mine = len(os.sched_getaffinity(0))
    for name in ("SFT_CPUS", "SLURM_CPUS_PER_TASK"):
        given = os.environ.get(name, "")
        if given.isdigit() and int(given) > 0:
            return min(int(given), mine)
    return mine


def use_cpu_cores() -> None:
    """accelerate launch sets OMP_NUM_THREADS=1 where psutil counts one physical core (2-vCPU
    machines), which halves CPU training speed; give each local process its share of the CPUs the
    job was given (more threads than CPUs spin against each other: 5-15x slower)."""
    import torch

    if has_cuda():
        return
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, given_cpus() // local_processes))


def peak_memory_bytes() -> int:
    """Peak GPU memory allocated, or the process's peak resident memory on a CPU."""
    import torch

    if has_cuda():
        return torch.cuda.max_memory_allocated()
    return peak_resident_bytes()


def peak_resident_bytes() -> int:
    """This process's own peak resident memory. Linux's ru_maxrss carries the parent's peak across
    exec (a stage launched by accelerate, a probe run by pytest would report theirs), VmHWM does not."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        scale = 1 if os.uname().sysname == "Darwin" else 1024  # bytes on macOS, KiB elsewhere
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def generation_backend(name: str, stage: str = "evaluate") -> str:
    """auto -> vLLM where a CUDA GPU and vllm are present, else transformers. Asking for vLLM
    without them falls back to transformers with one line (docs/gpu-settings.md)."""
    if name not in GENERATION_BACKENDS:
        raise UserError(f"params.yaml: {stage}.backend '{name}' is not one of {GENERATION_BACKENDS}")
    vllm_ready = has_cuda() and has_vllm()
    if name == "vllm" and not vllm_ready:
        why = "no CUDA GPU" if not has_cuda() else "vllm is not installed"
        print(f"[{stage}] {why}: {stage}.backend vllm -> transformers (see docs/gpu-settings.md)", flush=True)
        return "transformers"
    if name == "llamacpp" and not has_llamacpp():
        print(f"[{stage}] llama-cpp-python is not installed (make llamacpp): {stage}.backend llamacpp -> transformers",
              flush=True)
        return "transformers"
    if name == "auto":
        return "vllm" if vllm_ready else "transformers"
    return name



def serving_backend() -> str:
    """vLLM where a CUDA GPU and vllm are present; llama.cpp on a CPU where it is installed (it
    answers faster there: bench/results/generate.json); transformers' own server otherwise."""
    if has_cuda() and has_vllm():
        return "vllm"
    if has_cuda():
        print("[serve] CUDA GPU but no vllm (see docs/gpu-settings.md): serving with transformers", flush=True)
        return "transformers"
    return "llamacpp" if has_llamacpp() else "transformers"
