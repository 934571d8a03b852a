from dataclasses import dataclass

import pytest

from sft.params import UserError, from_dict, load, run


@dataclass
class Example:
    learning_rate: float = 1e-4
    epochs: int = 1


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(UserError, match=r"unknown key 'learning_rat'.*did you mean 'learning_rate'"):
        from_dict(Example, {"learning_rat": 0.1}, "params.yaml: train")


def test_extra_valid_keys_are_accepted_and_left_out():
    assert from_dict(Example, {"epochs": 3, "warmup_steps": 5}, "x", extra_valid={"warmup_steps"}) == Example(epochs=3)


def test_load_reads_one_section(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: 4\nother:\n  x: 1\n")
    assert load("train", Example, str(path)).epochs == 4
    with pytest.raises(UserError, match="no 'trian:' section.*did you mean 'train'"):
        load("trian", Example, str(path))


def test_run_turns_a_user_error_into_one_line_and_exit_2(capsys):
    def main():
        raise UserError("data.jsonl line 3: field 'sql' is null; fill it or drop the record")

    with pytest.raises(SystemExit) as exit_info:
        run(main)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: data.jsonl line 3: field 'sql' is null; fill it or drop the record\n"
