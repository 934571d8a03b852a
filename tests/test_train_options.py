"""Train options on the tiny model: packing keeps the loss, the best checkpoint survives rotation,
W&B runs offline with no key in any file, and the progress bar shows tokens per second."""

import json
import os

import pytest
import torch
from conftest import git_workdir, prepared, stage_main, training_split
from transformers import TrainerCallback

from sft import tracking, training
from sft.models import load_folder


def sft_trainer(model_dir, data, out, **args):
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_folder(model_dir)
    config = SFTConfig(output_dir=str(out), report_to="none", max_length=512, bf16=False, seed=0,
                       gradient_checkpointing=False, logging_steps=1, disable_tqdm=True, **args)
    return SFTTrainer(model=model, args=config, train_dataset=data, eval_dataset=data, processing_class=tokenizer)


def test_packed_and_unpacked_runs_give_the_same_loss(tiny_model_dir, tmp_path):
    """One step over all 8 records in one batch, then an evaluation: packing (position ids restart at
    each record, so no record attends to another) must not change the loss or the update."""
    data = training_split(prepared(tmp_path / "data", 8, 1) / "train.jsonl", tiny_model_dir)
    runs = {}
    for packing in (False, True):
        trainer = sft_trainer(tiny_model_dir, data, tmp_path / f"packing-{packing}", packing=packing,
                              per_device_train_batch_size=8, per_device_eval_batch_size=8, max_steps=1,
                              learning_rate=5e-3, save_strategy="no", eval_strategy="no")
        rows = len(trainer.train_dataset)
        trainer.train()
        runs[packing] = (rows, trainer.state.log_history[0]["loss"], trainer.evaluate()["eval_loss"])
    (rows_plain, loss_plain, eval_plain), (rows_packed, loss_packed, eval_packed) = runs[False], runs[True]
    assert rows_packed < rows_plain == 8  # really packed: several records a row
    assert loss_packed == pytest.approx(loss_plain, rel=1e-6)
    assert eval_packed == pytest.approx(eval_plain, rel=1e-6)
    assert eval_plain < loss_plain  # the step moved the weights: the comparison is of a trained update


def test_packing_without_restarting_positions_would_change_the_loss(tiny_model_dir, tmp_path):
    """The control for the test above: the same packed row, read as one long document, gives another loss."""
    data = training_split(prepared(tmp_path / "data", 8, 1) / "train.jsonl", tiny_model_dir)
    trainer = sft_trainer(tiny_model_dir, data, tmp_path / "o", packing=True, per_device_train_batch_size=8)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    model = trainer.model.eval()
    with torch.no_grad():
        separate = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"]).loss
        positions = torch.arange(batch["input_ids"].shape[1]).unsqueeze(0)
        one_document = model(input_ids=batch["input_ids"], position_ids=positions, labels=batch["labels"]).loss
    # Far outside the rel 1e-6 (~1e-5 here) that the test above allows.
    assert abs(separate.item() - one_document.item()) > 1e-4


class EpochOneIsBest(TrainerCallback):
    """Makes the first epoch the best by validation loss, whatever the random model does."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics["eval_loss"] = float(state.epoch)


def test_save_total_limit_never_deletes_the_best_checkpoint(tiny_model_dir, tmp_path):
    data = training_split(prepared(tmp_path / "data", 4, 1) / "train.jsonl", tiny_model_dir)
    defaults = {k: v for k, v in training.SFT_DEFAULTS.items() if k != "report_to"}
    trainer = sft_trainer(tiny_model_dir, data, tmp_path / "out", **defaults, num_train_epochs=3,
                          per_device_train_batch_size=4, save_total_limit=2)
    trainer.add_callback(EpochOneIsBest())
    trainer.train()
    # Epoch 1 (the best) and epoch 3 (the last, to resume from) remain; epoch 2 was rotated out.
    assert sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-3"]


def test_wandb_comes_from_params_or_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    for name in ("WANDB_RUN_ID", "WANDB_RESUME"):  # continue_wandb_run sets them: undone after the test
        monkeypatch.setenv(name, "")
    assert tracking.report_to("none") == ["none"]
    assert tracking.report_to(["dvclive"]) == ["none"]  # DVCLive is always attached, by step
    assert tracking.report_to("wandb") == ["wandb"]
    monkeypatch.setenv("WANDB_PROJECT", "sft")
    assert tracking.report_to("none") == ["wandb"]
    first = tracking.continue_wandb_run(tmp_path)
    assert tracking.continue_wandb_run(tmp_path) == first == os.environ["WANDB_RUN_ID"]
    assert os.environ["WANDB_RESUME"] == "allow"


def test_offline_wandb_run_and_the_progress_bar(tiny_model_dir, tmp_path, monkeypatch, capfd):
    """The train stage with WANDB_PROJECT set and WANDB_MODE=offline: a W&B run is written with no
    account, the API key from the environment is in no file, and the bar shows tokens per second."""
    pytest.importorskip("wandb")
    work = git_workdir(tmp_path / "work")  # DVCLive wants a commit
    (work / "params.yaml").write_text("train:\n  epochs: 1\n  per_device_train_batch_size: 2\n"
                                      "  gradient_checkpointing: false\n  seed: 0\n")
    prepared(work / "data", 4, 2, model_dir=tiny_model_dir)
    key = "sentinel" + "0" * 32
    for name, value in {"WANDB_PROJECT": "sft-test", "WANDB_MODE": "offline", "WANDB_DIR": str(work),
                        "WANDB_API_KEY": key, "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    monkeypatch.chdir(work)
    monkeypatch.setattr("sys.argv", ["train", "--model", str(tiny_model_dir), "--data", "data", "--out", "out",
                                     "--metrics", "train.json", "--live", "live"])
    stage_main("train")()
    runs = list((work / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert not (work / "out" / tracking.WANDB_RUN_FILE).exists()  # a random id: not in the hashed output
    assert "tok/s" in capfd.readouterr().err
    leaked = [p for p in work.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert leaked == []
    assert json.loads((work / "train.json").read_text())["global_step"] == 2
