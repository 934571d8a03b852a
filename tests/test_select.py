"""select: the best checkpoint by validation loss or by a figure of the task metric."""

import json

import pytest
from conftest import TRAINED_PARAMS, stage_main

from sft import checkpoints, generation
from sft.models import NF4_WEIGHTS
from sft.params import UserError
from sft.selection import SelectParams, best, candidates


def trainer_state(tmp_path, losses):
    history = [{"loss": 1.0, "step": 1}]
    for epoch, (step, loss) in enumerate(losses, 1):
        history.append({"eval_loss": loss, "step": step, "epoch": float(epoch)})
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    return tmp_path


def test_picks_the_lowest_validation_loss(tmp_path):
    rows = candidates(trainer_state(tmp_path, [(10, 0.9), (20, 0.4), (30, 0.6)]), "eval_loss")
    choice = best(rows, SelectParams())
    assert choice["checkpoint"].endswith("checkpoint-20") and choice["eval_loss"] == 0.4
    assert [r["step"] for r in rows] == [10, 20, 30]


def test_greater_is_better_and_ties_go_to_the_earlier_checkpoint(tmp_path):
    rows = candidates(trainer_state(tmp_path, [(10, 0.5), (20, 0.7), (30, 0.7)]), "eval_loss")
    assert best(rows, SelectParams(greater_is_better=True))["step"] == 20


def test_evaluations_without_a_checkpoint_are_not_candidates(tmp_path):
    trainer_state(tmp_path, [(10, 0.9), (20, 0.4)])
    (tmp_path / "checkpoint-20").rmdir()
    assert [r["step"] for r in candidates(tmp_path, "eval_loss")] == [10]


def test_clear_errors(tmp_path):
    with pytest.raises(UserError, match="trainer_state.json is missing"):
        candidates(tmp_path, "eval_loss")
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": [{"loss": 1.0, "step": 1}]}))
    with pytest.raises(UserError, match="no saved checkpoint has an evaluation"):
        candidates(tmp_path, "eval_loss")


def test_direction_follows_the_name_unless_given():
    rows = [{"step": 1, "eval_loss": 0.5, "accuracy": 0.5}, {"step": 2, "eval_loss": 0.4, "accuracy": 0.7}]
    assert best(rows, SelectParams(metric="eval_loss"))["step"] == 2
    assert best(rows, SelectParams(metric="accuracy"))["step"] == 2
    assert best(rows, SelectParams(metric="accuracy", greater_is_better=False))["step"] == 1


def test_select_by_a_task_figure_generates_on_validation_records(trained_copy, tiny_model_dir, monkeypatch):
    trained = trained_copy
    monkeypatch.chdir(trained)
    (trained / "data" / "task.json").write_text(json.dumps({"metric": "sql_execution",
                                                            "references": ["sql_context"]}))
    (trained / "params.yaml").write_text(TRAINED_PARAMS.replace("  metric: eval_loss\n",
                                                        "  metric: execution_accuracy\n  samples: 2\n"
                                                        "  max_new_tokens: 4\n"))
    monkeypatch.setattr("sys.argv", ["select", "--train", "out", "--base", str(tiny_model_dir), "--data", "data",
                                     "--out", "select-task.json"])
    stage_main("select")()
    choice = json.loads((trained / "select-task.json").read_text())
    assert [c["select_samples"] for c in choice["candidates"]] == [2, 2]
    assert all("execution_accuracy" in c and "eval_loss" in c for c in choice["candidates"])
    # A random model's replies hold no SQL: both score 0, and the tie goes to the earlier checkpoint.
    assert choice["execution_accuracy"] == 0.0 and choice["step"] == 2

    (trained / "params.yaml").write_text(TRAINED_PARAMS.replace("  metric: eval_loss\n", "  metric: bleu\n  samples: 1\n"
                                                        "  max_new_tokens: 2\n"))
    monkeypatch.setattr(checkpoints, "trained_model", lambda *a, **k: pytest.fail("a checkpoint was loaded"))
    with pytest.raises(UserError, match="select.metric 'bleu' is neither a trainer log key nor a figure"):
        stage_main("select")()  # before any checkpoint is loaded or generates


def test_a_qlora_candidate_generates_on_the_4bit_base_it_was_trained_on(trained_copy, tiny_model_dir, monkeypatch):
    """Scored on the full-precision base, a QLoRA adapter is not the model that was trained."""
    trained = trained_copy
    monkeypatch.chdir(trained)
    (trained / "data" / "task.json").write_text(json.dumps({"metric": "sql_execution",
                                                            "references": ["sql_context"]}))
    (trained / "params.yaml").write_text(TRAINED_PARAMS.replace(
        "  metric: eval_loss\n", "  metric: execution_accuracy\n  samples: 1\n  max_new_tokens: 2\n"))
    # What train decided, not params.yaml, says the adapter was trained on a 4-bit base.
    record = json.loads((trained / "models" / "trained.json").read_text())
    (trained / "models" / "trained.json").write_text(json.dumps({**record, "method": "qlora",
                                                                 "quantization": NF4_WEIGHTS}))
    loaded, generated_on = [], []
    real = checkpoints.trained_model

    def trained_model(base, checkpoint, dtype, trained):
        loaded.append(checkpoints.base_as_trained(trained))
        # the tiny model is too narrow for bitsandbytes' 4-bit blocks: loaded in full precision here
        return real(base, checkpoint, dtype, {**trained, "quantization": None})

    monkeypatch.setattr(checkpoints, "trained_model", trained_model)
    monkeypatch.setattr(generation, "replies", lambda model, *a, **k: generated_on.append(model[0]) or (["x"], {}))
    monkeypatch.setattr("sys.argv", ["select", "--train", "out", "--base", str(tiny_model_dir), "--data", "data",
                                     "--out", "select-task.json"])
    stage_main("select")()
    assert len(loaded) == 2 and all(load["quantization_config"].load_in_4bit for load in loaded)
    assert all(hasattr(model, "peft_config") for model in generated_on)  # the adapter, unmerged
