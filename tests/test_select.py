import json

import pytest

from stages.params import UserError
from stages.select import SelectParams, best, candidates


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
