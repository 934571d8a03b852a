"""Train on the tiny model: labels, checkpoints and evaluations per epoch, a pinned loss, the
loss on a CPU equal to trl's, GPU-only settings falling back, QLoRA really 4-bit."""

import json

import pytest
import torch
from conftest import prepared, training_split

from sft import training
from sft.models import load_folder
from sft.params import UserError


def test_prompt_tokens_carry_no_loss(tiny_model_dir, tmp_path):
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_folder(tiny_model_dir)
    data = training_split(prepared(tmp_path / "data", 2, 1) / "train.jsonl", tiny_model_dir)
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=data,
                         args=SFTConfig(output_dir=str(tmp_path / "o"), report_to="none", max_length=512, bf16=False))
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    trained = tokenizer.decode(ids[labels != -100])
    completion = json.loads((tmp_path / "data" / "train.jsonl").read_text().splitlines()[0])["completion"][0]["content"]
    assert trained.startswith(completion) and trained.rstrip().endswith("<|im_end|>")
    prompt_len = len(tokenizer.apply_chat_template(
        json.loads((tmp_path / "data" / "train.jsonl").read_text().splitlines()[0])["prompt"],
        add_generation_prompt=True, tokenize=True)["input_ids"])
    assert (labels[:prompt_len] == -100).all() and (labels[prompt_len:] != -100).any()


def test_unknown_train_key_names_the_closest_sft_argument(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  learning_rat: 0.1\n")

    with pytest.raises(UserError, match="did you mean 'learning_rate'"):
        training.load_params(str(tmp_path / "params.yaml"))


def test_a_checkpoint_and_an_evaluation_every_epoch(trained_run):
    trained = trained_run
    state = json.loads((trained / "out" / "trainer_state.json").read_text())
    evals = [h for h in state["log_history"] if "eval_loss" in h]
    assert [e["epoch"] for e in evals] == [1.0, 2.0]
    assert sorted(p.name for p in (trained / "out").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    metrics = json.loads((trained / "train.json").read_text())
    assert metrics["global_step"] == 4 and metrics["world_size"] == 1 and metrics["global_batch"] == 4
    speed = json.loads((trained / "speed.json").read_text())
    assert speed["tokens_per_second"] > 0 and speed["train_seconds"] > 0 and "peak_memory_gb" in speed
    assert not set(speed) & set(metrics)  # what varies by machine is only in the speed file
    # ... and nowhere in the run's folder: no runtimes or rates in any trainer state.
    for state_file in (trained / "out").rglob("trainer_state.json"):
        logged = {k for entry in json.loads(state_file.read_text())["log_history"] for k in entry}
        assert not {k for k in logged if k.endswith(("_runtime", "_per_second"))}, state_file
    assert metrics["eval_loss"] == evals[-1]["eval_loss"]
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert losses[-1] < losses[0]
    # Pinned: a change to data rendering, labels or the loss shows up here first.
    assert losses[-1] == pytest.approx(10.7744, abs=1e-3)
    eval_rows = (trained / "live" / "plots" / "metrics" / "eval" / "loss.tsv").read_text().splitlines()
    train_rows = (trained / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    # Both curves at the trainer's own steps: an evaluation at the end of each epoch (steps 2 and 4).
    assert [row.split("\t")[0] for row in eval_rows[1:]] == ["2", "4"]
    assert [row.split("\t")[0] for row in train_rows[1:5]] == ["1", "2", "3", "4"]


def test_train_writes_what_it_decided_for_the_stages_after_it(trained_run):
    """models/trained.json: the method and the adapter select and merge load, the settings as
    applied (params' keys, the project's defaults and the CPU's fallbacks), the global batch."""
    from sft import trained

    record = trained.read(trained_run / "models" / "trained.json")
    metrics = json.loads((trained_run / "train.json").read_text())
    assert record["method"] == "lora" and record["quantization"] is None
    assert record["adapter"] == {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear",
                                 "use_dora": False}
    assert record["global_batch"] == metrics["global_batch"] == 4 and record["world_size"] == 1
    assert (record["max_length"], record["train_on"]) == (512, "all_assistant")  # as prepare applied them
    assert record["settings"]["learning_rate"] == 5e-3 and record["settings"]["lora_r"] == 8
    assert record["settings"]["epochs"] == 2 and record["settings"]["keep_stale"] == 2  # a project default
    assert record["project_settings"]["eval_strategy"] == "epoch"  # the project's default, as applied
    assert record["project_settings"]["dataloader_pin_memory"] is False  # the CPU's fallback
    assert record["loss"] == "completion_only_lm_head"
    assert "report_to" not in record["settings"] and "report_to" not in record["project_settings"]


def test_a_fallback_is_recorded_as_applied_not_as_asked(tmp_path):
    """bf16 asked for on a CPU trains in float32: the record says what ran."""
    (tmp_path / "params.yaml").write_text("train:\n  method: qlora\n  bf16: true\n  attn_implementation: "
                                          "flash_attention_2\n  optim: paged_adamw_8bit\n")
    p, sft = training.load_params(str(tmp_path / "params.yaml"), announce=False)
    applied = training.applied_settings(p, {**sft, "max_length": 64}, has_cuda=False)
    config = training.trainer_config(p, applied, str(tmp_path / "out"))
    record = training.decided(p, {"method": 1, "bf16": 1, "attn_implementation": 1, "optim": 1}, applied, config,
                              False, {"max_length": 64, "train_on": "last"})
    assert record["settings"]["bf16"] is False and record["settings"]["optim"] == "adamw_torch"
    assert record["settings"]["attn_implementation"] == "sdpa"
    assert record["quantization"] == {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                      "bnb_4bit_use_double_quant": True}
    json.dumps(record)  # every value is JSON: the record is a hashed output


def test_the_record_is_read_whole_or_refused_in_one_line(tmp_path):
    from sft import trained

    with pytest.raises(UserError, match="is missing; run the train stage first"):
        trained.read(tmp_path / "trained.json")
    (tmp_path / "trained.json").write_text("{not json")
    with pytest.raises(UserError, match="is not the train stage's JSON"):
        trained.read(tmp_path / "trained.json")
    (tmp_path / "trained.json").write_text('{"method": "lora"}')
    with pytest.raises(UserError, match="lacks adapter, quantization, .*: written by an older train stage"):
        trained.read(tmp_path / "trained.json")


def test_gpu_only_settings_fall_back_on_a_cpu_with_one_line_each(capsys):
    sft = training.without_gpu_only_settings({"use_liger_kernel": True, "learning_rate": 1e-3}, has_cuda=False)
    assert sft == {"use_liger_kernel": False, "learning_rate": 1e-3, "bf16": False, "fp16": False,
                   "dataloader_pin_memory": False}
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["[train] no CUDA GPU: train.bf16 -> False (see docs/gpu-settings.md)",
                     "[train] no CUDA GPU: train.use_liger_kernel -> False (see docs/gpu-settings.md)"]
    assert training.without_gpu_only_settings({"bf16": True}, has_cuda=True) == {"bf16": True}


@pytest.mark.parametrize("key, value, package, fallback", [
    ("use_liger_kernel", True, "liger_kernel", False), ("optim", "adamw_torch_4bit", "torchao", "adamw_torch"),
    ("optim", "paged_adamw_8bit", "bitsandbytes", "adamw_torch"),
])
def test_gpu_settings_fall_back_on_a_gpu_without_their_package(monkeypatch, capsys, key, value, package, fallback):
    """A CUDA machine whose first `make setup` did not install the GPU extra: one line, no traceback."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    sft = training.without_gpu_only_settings({key: value, "bf16": True}, has_cuda=True)
    assert sft == {key: fallback, "bf16": True}
    assert capsys.readouterr().out == (f"[train] {package} is not installed: train.{key} {value} -> {fallback} "
                                       "(make setup installs the GPU extra on a CUDA machine; see docs/gpu-settings.md)\n")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # installed: kept as asked
    assert training.without_gpu_only_settings({key: value}, has_cuda=True) == {key: value}


def test_plain_loss_on_a_cpu_equals_trl_fused_loss(tiny_model_dir, tmp_path):
    from trl import SFTConfig

    data = training_split(prepared(tmp_path / "data", 4, 1) / "train.jsonl", tiny_model_dir)
    losses = []
    for fused in (True, False):
        model, tokenizer = load_folder(tiny_model_dir)
        trainer = training.trainer_class(fused)(
            model=model, processing_class=tokenizer, train_dataset=data,
            args=SFTConfig(output_dir=str(tmp_path / "o"), report_to="none", max_length=512, bf16=False))
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        num_items = (batch["labels"][:, 1:] != -100).sum()
        with torch.no_grad():
            losses.append(trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=num_items).item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert losses[0] > 1.0  # a random model: the loss is real, not zero


def test_fused_lm_head_is_on_a_gpu_only_unless_named():
    p = training.TrainParams()
    assert training.uses_fused_lm_head(p, has_cuda=True) and not training.uses_fused_lm_head(p, has_cuda=False)
    assert training.uses_fused_lm_head(training.TrainParams(fused_lm_head=True), has_cuda=False)


def test_qlora_really_loads_the_base_in_4bit(tiny_model_dir):
    import bitsandbytes as bnb

    kwargs = training.model_load_kwargs(training.TrainParams(method="qlora"), has_cuda=False)
    model, _ = load_folder(tiny_model_dir, **kwargs)
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 2 * 7  # every attention and MLP projection of both layers
    assert quantized[0].weight.quant_state.quant_type == "nf4"
    full, _ = load_folder(tiny_model_dir, **training.model_load_kwargs(training.TrainParams(method="lora"), has_cuda=False))
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in full.modules())


def test_flash_attention_falls_back_to_sdpa_without_a_gpu(capsys):
    kwargs = training.model_load_kwargs(training.TrainParams(attn_implementation="flash_attention_2"), has_cuda=False)
    assert kwargs == {"attn_implementation": "sdpa"}
    assert "flash_attention_2 -> sdpa" in capsys.readouterr().out


def test_flash_attention_falls_back_to_sdpa_on_a_gpu_without_flash_attn(capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name, *a))
    kwargs = training.model_load_kwargs(training.TrainParams(attn_implementation="flash_attention_2"), has_cuda=True)
    assert kwargs == {"attn_implementation": "sdpa"}
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("[train] flash-attn is not installed: train.attn_implementation flash_attention_2 -> sdpa")


def test_dora_adds_magnitude_vectors(tiny_model_dir):
    from peft import get_peft_model

    model, _ = load_folder(tiny_model_dir)
    dora = get_peft_model(model, training.peft_config(training.TrainParams(use_dora=True, lora_r=4)))
    assert any("lora_magnitude_vector" in name for name, _ in dora.named_parameters())
    assert training.peft_config(training.TrainParams(method="full")) is None










def test_model_init_kwargs_dtype_loads_the_base_at_half_precision_on_a_gpu_and_float32_on_a_cpu(
        tiny_model_dir, tmp_path, capsys):
    """trl's `model_init_kwargs` (the workshop loaded its bases in bf16): the stage loads the model
    itself, so it applies them and clears them for trl, which would otherwise warn they are ignored."""
    import torch
    from conftest import prepared

    p = training.TrainParams(method="lora", lora_r=4, lora_alpha=8)
    sft = {**training.SFT_DEFAULTS, "model_init_kwargs": {"dtype": "bfloat16"}, "bf16": False, "report_to": [],
           "max_length": 256}
    assert training.without_gpu_only_settings(sft, has_cuda=False)["model_init_kwargs"] == {"dtype": "float32"}
    assert "train.model_init_kwargs.dtype bfloat16 -> float32" in capsys.readouterr().out

    config = training.sft_config(p, sft, str(tmp_path / "out"), has_cuda=True)  # as on a GPU with bf16 off
    trainer, _ = training.make_trainer(p, config, str(tiny_model_dir),
                                       prepared(tmp_path / "data", model_dir=tiny_model_dir), False)
    assert trainer.model.get_base_model().model.embed_tokens.weight.dtype == torch.bfloat16
    assert config.model_init_kwargs is None


def test_an_unknown_model_init_dtype_is_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  model_init_kwargs: {dtype: half}\n")
    with pytest.raises(UserError, match=r"train.model_init_kwargs.dtype is 'half'; use one of float32, bfloat16"):
        training.load_params(str(tmp_path / "params.yaml"))


def test_the_trainer_batches_exactly_the_tokens_prepare_wrote(tiny_model_dir, tmp_path):
    """train tokenizes nothing: every batch the trainer builds is prepare's token ids (padding
    aside), with labels where prepare's loss mask is 1 and -100 elsewhere; and no module the train
    stage runs is the one that tokenizes (sft/tokens.py)."""
    import yaml
    from conftest import ROOT, prepared

    from sft import handoff
    from tools.deps import code_deps

    data = prepared(tmp_path / "data", 6, 2, model_dir=tiny_model_dir)
    p = training.TrainParams(method="lora", lora_r=4, lora_alpha=8)
    sft = {**training.SFT_DEFAULTS, "report_to": [], "bf16": False, "per_device_train_batch_size": 4,
           "max_length": 512}
    config = training.sft_config(p, sft, str(tmp_path / "out"), has_cuda=False)
    trainer, _ = training.make_trainer(p, config, str(tiny_model_dir), data, False)
    batched = []
    for batch in trainer.get_train_dataloader():
        for ids, labels, mask in zip(batch["input_ids"].tolist(), batch["labels"].tolist(),
                                     batch["attention_mask"].tolist(), strict=True):
            kept = [i for i, m in enumerate(mask) if m]
            batched.append(([ids[i] for i in kept], [int(labels[i] != -100) for i in kept],
                            [labels[i] for i in kept if labels[i] != -100]))
    written = [(r["input_ids"], r["assistant_masks"], [t for t, m in zip(r["input_ids"], r["assistant_masks"],
                                                                        strict=True) if m])
               for r in handoff.token_rows(data, "train")]
    assert len(batched) == len(written) == 6 and sorted(batched) == sorted(written)
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]
    assert "sft/tokens.py" not in code_deps("train", stage) and "sft/handoff.py" in code_deps("train", stage)


def test_max_length_in_train_says_where_it_lives_now(tmp_path):
    """A config carried over from trl, or from this repository before prepare owned the tokens."""
    (tmp_path / "params.yaml").write_text("train:\n  max_length: 2048\n")
    with pytest.raises(UserError, match=r"train.max_length is prepare's now: move it to prepare.max_length"):
        training.load_params(str(tmp_path / "params.yaml"))


def test_early_stopping_ends_the_run_after_patience_evaluations_without_a_better_loss(tiny_model_dir, tmp_path):
    """train.early_stopping_patience: 1 with a validation loss that only worsens (forced, whatever
    the random model does): of 5 epochs only 2 run, and both checkpoints stay for select. Unset, it
    changes nothing, not even a run's fingerprint."""
    from conftest import prepared
    from transformers import TrainerCallback

    class WorseEveryEpoch(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            metrics["eval_loss"] = float(state.epoch)

    data = prepared(tmp_path / "data", 4, 1, model_dir=tiny_model_dir)
    p = training.TrainParams(method="lora", lora_r=4, lora_alpha=8, epochs=5, early_stopping_patience=1)
    sft = {**training.SFT_DEFAULTS, "report_to": [], "bf16": False, "per_device_train_batch_size": 4,
           "max_length": 512, "disable_tqdm": True}
    config = training.sft_config(p, sft, str(tmp_path / "out"), has_cuda=False)
    trainer, _ = training.make_trainer(p, config, str(tiny_model_dir), data, False, callbacks=[WorseEveryEpoch()])
    trainer.train()
    assert trainer.state.epoch == 2.0 and trainer.state.global_step == 2
    assert sorted(c.name for c in (tmp_path / "out").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]

    unset = training.TrainParams(method="lora")
    assert "early_stopping_patience" not in training.trained_by(unset, {}, "all_assistant")
    assert training.trained_by(p, {}, "all_assistant")["early_stopping_patience"] == 1
    for bad in (0, 1.5, True):
        with pytest.raises(UserError, match="train.early_stopping_patience"):
            training.TrainParams(early_stopping_patience=bad)
