"""Half precision on a CPU: train.cpu_bf16 (bf16 autocast, opt-in, refused in one line on a CPU
without bf16 instructions) and bf16 inference (the stages' dtype keys; float32 with one line on a
CPU without them). Where the CPU has them, oneDNN's AVX2 cap is lifted for that process alone, so
the products run on them (pinned, bf16 ran ~100x slower than float32); float32 stays pinned."""

import dataclasses
import os

import pytest
import torch
from conftest import prepared

from sft import training
from sft.device import native_half_cpu
from sft.numerics import PINS
from sft.params import UserError

FLAGS = "fpu vme de pse tsc msr sse sse2 avx avx2 avx512f avx512bw"


def cpuinfo(tmp_path, extra: str = "") -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: {FLAGS} {extra}\n\nprocessor\t: 1\n")
    return str(path)


def test_the_cpu_s_half_precision_instructions_are_read_from_its_flags(tmp_path):
    assert native_half_cpu("bfloat16", cpuinfo(tmp_path)) is None
    assert native_half_cpu("bfloat16", cpuinfo(tmp_path, "avx512_bf16")) == "avx512_bf16"
    assert native_half_cpu("bfloat16", cpuinfo(tmp_path, "amx_tile amx_bf16 avx512_bf16")) == "amx_bf16"
    assert native_half_cpu("float16", cpuinfo(tmp_path, "avx512_bf16")) is None
    assert native_half_cpu("float16", cpuinfo(tmp_path, "avx512_fp16")) == "avx512_fp16"
    assert native_half_cpu("bfloat16", str(tmp_path / "absent")) is None


def test_cpu_bf16_is_opt_in_refused_without_the_instructions_and_off_on_a_gpu(monkeypatch, capsys):
    p = training.TrainParams(cpu_bf16=True)
    monkeypatch.setattr(training, "native_half_cpu", lambda dtype: None)
    with pytest.raises(UserError, match=r"train.cpu_bf16 is true, but this CPU has neither AMX nor AVX512-BF16 .*"
                                        r"set train.cpu_bf16: false"):
        training.with_cpu_bf16(p, {"bf16": False}, has_cuda=False)
    assert training.cpu_bf16_flag(p, has_cuda=True) is None  # a GPU trains as its bf16 key says
    assert training.with_cpu_bf16(training.TrainParams(), {"bf16": False}, has_cuda=False) == {"bf16": False}
    monkeypatch.setattr(training, "native_half_cpu", lambda dtype: "amx_bf16")
    monkeypatch.setattr(training, "native_half_kernels", lambda: None)
    assert training.with_cpu_bf16(p, {"bf16": False, "seed": 1}, has_cuda=False) == {"bf16": True, "use_cpu": True, "seed": 1}
    assert "bf16 autocast on the CPU (amx_bf16)" in capsys.readouterr().out


def test_the_default_leaves_a_run_s_fingerprint_as_it_was():
    """A run made before train.cpu_bf16 existed resumes: the key is left out while false."""
    p, sft = training.TrainParams(), {"learning_rate": 1e-3}
    assert "cpu_bf16" not in training.trained_by(p, sft, "all_assistant")
    assert training.trained_by(dataclasses.replace(p, cpu_bf16=True), sft, "all_assistant")["cpu_bf16"] is True


def test_half_precision_inference_runs_on_the_cpu_s_instructions_or_falls_back_in_one_line(monkeypatch, capsys):
    from sft import models

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", PINS["ONEDNN_MAX_CPU_ISA"])
    monkeypatch.setattr(models, "native_half_cpu", lambda dtype: None)
    assert models.inference_dtype("bfloat16", "cpu") == "float32"
    assert capsys.readouterr().out == ("[models] this CPU has no bfloat16 instructions (amx_bf16 or avx512_bf16): "
                                       "bfloat16 -> float32 (emulated bfloat16 is ~100x slower here)\n")
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"  # float32 keeps every pin
    assert models.inference_dtype("float32", "cpu") == "float32" and models.inference_dtype("bfloat16", "cuda") == \
        "bfloat16"
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2" and capsys.readouterr().out == ""
    monkeypatch.setattr(models, "native_half_cpu", lambda dtype: "avx512_bf16")
    assert models.inference_dtype("bfloat16", "cpu") == "bfloat16"
    assert "ONEDNN_MAX_CPU_ISA" not in os.environ  # oneDNN's cap lifted, before its first bf16 product
    assert os.environ["MKL_CBWR"] == PINS["MKL_CBWR"]  # float32 stays pinned
    assert "bfloat16 on the CPU's avx512_bf16 instructions" in capsys.readouterr().out


def test_cpu_bf16_lifts_only_onednn_s_cap(monkeypatch):
    for key, value in PINS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(training, "native_half_cpu", lambda dtype: "amx_bf16")
    training.with_cpu_bf16(training.TrainParams(cpu_bf16=True), {}, has_cuda=False)
    assert "ONEDNN_MAX_CPU_ISA" not in os.environ
    assert all(os.environ[key] == PINS[key] for key in PINS if key != "ONEDNN_MAX_CPU_ISA")


@pytest.mark.skipif(native_half_cpu("bfloat16") is None, reason="this CPU has no bf16 instructions (AMX, AVX512-BF16)")
def test_a_tiny_model_trains_under_cpu_bf16_autocast(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", PINS["ONEDNN_MAX_CPU_ISA"])  # restored after: the lift is this test's
    p = training.TrainParams(cpu_bf16=True, epochs=1)
    sft = {"per_device_train_batch_size": 4, "max_steps": 2, "save_strategy": "no", "eval_strategy": "no",
           "report_to": "none", "learning_rate": 1e-3, "logging_steps": 1, "disable_tqdm": True, "max_length": 512,
           "gradient_checkpointing": False}
    config = training.sft_config(p, sft, str(tmp_path / "out"), has_cuda=False)
    assert config.bf16
    data = prepared(tmp_path / "data", 8, 2, model_dir=tiny_model_dir)
    trainer, _ = training.make_trainer(p, config, str(tiny_model_dir), data, has_cuda=False)
    computed = set()  # the dtype the projections compute in, through the stage's own loss
    for module in trainer.model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda m, args, out: computed.add(out.dtype))
    trainer.train()
    assert computed == {torch.bfloat16}
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 2 and all(0 < loss < 20 for loss in losses)
    # Autocast computes in bf16; the weights and what the optimizer updates stay float32.
    assert {param.dtype for param in trainer.model.parameters()} == {torch.float32}
