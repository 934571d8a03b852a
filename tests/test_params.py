from dataclasses import dataclass

import pytest
from conftest import section_classes

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


# Keys whose params.yaml value differs from the code's default on purpose, and why.
DELIBERATE = {("prepare", "max_records"): "the embedded set is cut to keep make repro under 15 minutes on a CPU; "
                                          "other data default to all records",
             ("prepare", "max_length"): "trl's default, 1024, in code; the embedded records are far shorter (at most "
                                        "~300 tokens), and 512 is what the committed run trained with"}


def test_params_yaml_lists_every_key_at_its_default_in_code():
    import dataclasses

    import yaml
    from conftest import ROOT

    from sft.training import SFT_DEFAULTS

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    differ = []
    for section, cls in section_classes().items():
        defaults = dataclasses.asdict(cls())
        for key, default in defaults.items():
            assert key in params[section], f"params.yaml: {section}.{key} is missing (default {default!r})"
            if params[section][key] != default and (section, key) not in DELIBERATE:
                differ.append(f"{section}.{key}: params.yaml {params[section][key]!r}, code {default!r}")
    differ += [f"train.{k}: params.yaml {params['train'][k]!r}, SFT_DEFAULTS {v!r}"
               for k, v in SFT_DEFAULTS.items() if k in params["train"] and params["train"][k] != v]
    assert differ == []
    for (section, key), _why in DELIBERATE.items():
        assert params[section][key] != dataclasses.asdict(section_classes()[section]())[key]


@pytest.mark.parametrize("section, key, value, message", [
    ("train", "learning_rate", "1e-3", r"train.learning_rate is str '1e-3'; it must be float \(YAML reads 1e-3 as text"),
    ("train", "epochs", "two", r"train.epochs is str 'two'; it must be float"),
    ("train", "lora_r", 8.5, r"train.lora_r is float 8.5; it must be int"),
    ("train", "bf16", "yes", r"train.bf16 is str 'yes'; it must be bool or null"),
    ("train", "method", "qlora4", r"train.method is 'qlora4'; use one of full, lora, qlora"),
    ("train", "fused_lm_head", "sometimes", r"train.fused_lm_head is 'sometimes'; use one of auto, True, False"),
    ("evaluate", "max_new_tokens", "64", r"evaluate.max_new_tokens is str '64'; it must be int"),
    ("evaluate", "backend", "tgi", r"evaluate.backend is 'tgi'; use one of auto, transformers, vllm, llamacpp"),
    ("select", "greater_is_better", "no", r"select.greater_is_better is str 'no'; it must be bool or null"),
    ("prepare", "max_records", {"tain": 5}, r"prepare.max_records is 'tain'; use one of train, validation, test"),
    ("prepare", "on_too_long", "truncate", r"prepare.on_too_long is 'truncate'; use one of error, drop"),
    ("merge", "dtype", "fp16", r"merge.dtype is 'fp16'; use one of float32, bfloat16, float16"),
    ("base", "random_init", [32], r"base.random_init is list \[32\]; it must be dict or null"),
])
def test_a_wrong_value_names_the_key_and_the_type_when_the_section_loads(tmp_path, section, key, value, message):
    import yaml

    from sft.training import load_params

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({section: {key: value}}))
    with pytest.raises(UserError, match=message):
        if section == "train":
            load_params(str(path))
        else:
            load(section, section_classes()[section], str(path))


def test_a_bad_train_value_stops_before_the_scratch_folder_is_touched(tmp_path, monkeypatch):
    """The check runs when the section loads: checkpoints of an interrupted run survive a typo."""
    from conftest import stage_main

    (tmp_path / "params.yaml").write_text("train:\n  fused_lm_head: sometimes\n")
    checkpoint = tmp_path / "out.partial" / "checkpoint-5"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["train", "--model", "m", "--data", "d", "--out", "out"])
    with pytest.raises(SystemExit) as exit_info:
        run(stage_main("train"))
    assert exit_info.value.code == 2
    assert (checkpoint / "trainer_state.json").read_text() == "{}"


LAUGHS = "base: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)) + "train:\n  epochs: *a8\n"


@pytest.mark.parametrize("text, named", [
    (LAUGHS, "line 2"),  # a kilobyte that expands to 9^9 nodes
    ("train:\n  epochs: 1\n  lora_target_modules: &loop [*loop]\n", "line 3"),  # refers to itself
    ("train: &t {epochs: 1}\nbase: *t\n", "line 2"),  # a plain alias is refused too: the rule has no size
    ("train:\n  <<: &m {epochs: 1}\n", "alias"),  # an anchor alone is harmless, its merge is not written out
    ("train:\n  epochs: " + "[" * 100_000 + "]" * 100_000 + "\n", "deep"),
    ("train:\n  epochs: " + "9" * 5000 + "\n", "cannot be read"),
    ("train:\n  epochs: 1\n  run_name: \xff\n", "UTF-8"),
    ("train:\n  epochs: 1\n  epochs: 20\n", "line 3"),  # the later one would win unseen
    ("train:\n  1: x\n", "keys are names"),
    ("1: x\ntrain: {}\n", "by name"),
    ("train:\n  report_to: {[a]: 1}\n", "line 2"),
    ("train:\n  epochs: !!python/object/apply:os.system [true]\n", "line 2"),
])
def test_params_that_are_yaml_but_not_values_stop_in_one_line_at_once(tmp_path, text, named):
    import time

    from sft.params import read_section

    path = tmp_path / "params.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape") if "\xff" not in text else text.encode("latin-1"))
    started = time.perf_counter()
    try:
        read_section("train", str(path))
    except UserError as e:
        assert named in str(e) and str(path) in str(e) and "\n" not in str(e)
    else:
        assert named == "alias", "only a merge of an anchor defined in place may load"
    assert time.perf_counter() - started < 2


def test_a_yaml_file_past_its_size_is_refused_unread(tmp_path):
    from sft.params import read_yaml

    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: 1\n" + "# padding\n" * 200_000)
    with pytest.raises(UserError, match="must be under"):
        read_yaml(path)
