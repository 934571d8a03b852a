"""A bad value of every key of params.yaml: the stage that reads it, started as dvc.yaml starts it,
exits with status 2 and one line naming the key, before it touches the disk (its outputs from an
earlier run unchanged; for train, before accelerate starts any process)."""

import importlib
import math

import pytest
import yaml
from conftest import ROOT, stage_main

from sft.params import run

# One bad value a key: out of range or not a choice where the key has one, else the wrong type.
BAD = {
    "base": {"model_name_or_path": 5, "gguf_file": ["a.gguf"], "gguf_sha256": "b179c95", "revision": 7,
             "dtype": "fp8", "model_class": "AutoModel", "random_init": [32], "seed": "zero"},
    "prepare": {"dataset": [], "subset": 3, "revision": 1.5, "prompts": None, "shape": "csv", "seed": 1.5,
                "max_records": {"train": -1}, "split_fractions": {"validation": 1.5}, "on_too_long": "truncate",
                "train_on": "first", "audit_examples": -1, "datasets": "a,b", "eval_sources": "some", "max_length": 0},
    "launch": {"config_file": 5, "num_processes": 0, "num_machines": 0, "machine_rank": -1, "main_process_ip": 5,
               "main_process_port": 70000},
    "train": {"method": "bogus", "epochs": 0, "lora_r": 0, "lora_alpha": 0, "lora_dropout": 1.5,
              "lora_target_modules": 5, "use_dora": "yes", "attn_implementation": "flash", "fused_lm_head": "sometimes",
              "keep_stale": -1, "early_stopping_patience": 0, "cpu_bf16": "yes", "learning_rate": -1.0e-3, "lr_scheduler_type": "cosin", "warmup_steps": -1,
              "per_device_train_batch_size": 0, "per_device_eval_batch_size": 0, "gradient_accumulation_steps": 0,
              "train_sampling_strategy": "by_length", "gradient_checkpointing": "yes",
              "logging_steps": 0, "seed": "x", "bf16": "yes"},
    "select": {"metric": 5, "greater_is_better": "no", "samples": 0, "max_new_tokens": 0, "batch_size": 0,
               "dtype": "fp16"},
    "merge": {"dtype": "fp16", "parity_prompts": 0, "parity_max_new_tokens": 0, "max_mean_kl": -1.0,
              "min_greedy_agreement": 1.5},
    "evaluate": {"max_new_tokens": 0, "batch_size": 0, "dtype": "half", "backend": "tgi"},
    "fewshot": {"shots": -1, "seed": "x"},
    "forgetting": {"dataset": [], "subset": 3, "revision": 1.5, "split": 5, "text_field": 5, "max_documents": 0,
                   "max_length": 1, "batch_size": 0, "dtype": "half"},
    "others": {"hub": {"gemma": {"model_name_or_path": "google/gemma-3-270m-it", "revision": "main"}},
               "folders": {"../earlier": "models/earlier"}},
    "benchmarks": {"tasks": ["../../etc/evil.yaml"], "revisions": {"sft_general": "main"}, "num_fewshot": -1,
                   "apply_chat_template": "yes", "limit": 0, "batch_size": 0, "dtype": "half", "backend": "llamacpp"},
    "judge": {"hub": {"big": {"model_name_or_path": "org/judge", "revision": "main"}}, "folders": {"../up": "x"},
              "rubric": 5, "mode": "elo", "max_items": 0, "max_new_tokens": 0, "batch_size": 0, "dtype": "half",
              "backend": "llamacpp"},
    "export": {"outtype": "q3", "parity_prompts": 0, "parity_max_new_tokens": 0, "min_greedy_agreement": -0.1,
               "test_max_new_tokens": 0, "model_name": 5},
    "card": {"base_model": 5, "license": 5, "model_name": 5},
    "slurm": {"partition": "gpu\n#SBATCH --uid=0", "account": "a b", "time": "1:00;id", "gpus_per_node": -1,
              "cpus_per_task": 0, "mem": "$(id)", "setup": ["a\nb"], "options": ["--qos=x --uid=0"],
              "git_remote": "../x", "workdir": "", "requeue": "yes"},
}
# Sections no stage reads, and the program that reads each (its argv): checked before it submits anything.
NOT_STAGES = {"slurm": ("apps.slurm", ["sweep", "--grid", "train.epochs=1,2"], [])}

# Bad values that are not one key's type or range: NaN, fractions together, secrets, nesting.
MORE = [
    ("merge", "max_mean_kl", math.nan, "merge.max_mean_kl"),
    ("export", "min_greedy_agreement", math.nan, "export.min_greedy_agreement"),
    ("prepare", "max_records", {"test": 2.5}, "prepare.max_records.test"),
    ("prepare", "max_records", {"tain": 5}, "prepare.max_records"),
    ("prepare", "split_fractions", {"valid": 0.1}, "prepare.split_fractions"),
    ("prepare", "split_fractions", {"validation": 0.6, "test": 0.5}, "prepare.split_fractions sum to 1.1"),
    ("train", "max_steps", 0, "train.max_steps"),
    ("train", "optim", "adamw_torch_fusd", "train.optim"),
    ("train", "hub_token", "hf_PlantedInParams0e1f", "train.hub_token is a secret"),
    ("train", "report_to", {"wandb_api_key": "PlantedInParams9c8d"}, "train.report_to.wandb_api_key is a secret"),
    ("prepare", "datasets", [{"dataset": "x", "token": "PlantedInParams77aa"}], "prepare.datasets[0].token is a secret"),
    ("base", "hf_token", "hf_PlantedInParams5b5b", "base.hf_token is a secret"),
    ("others", "hub", {"gemma": {"model_name_or_path": "google/gemma-3-270m-it"}}, "others.hub.gemma"),
    ("others", "hub", {"gemma": "google/gemma-3-270m-it"}, "others.hub.gemma"),
    ("others", "hub", {"gemma": {"model_name_or_path": "a/b", "revision": "0" * 40, "hf_token": "PlantedInParams1a2b"}},
     "others.hub.gemma.hf_token is a secret"),
    ("others", "folders", {"": "models/x"}, "others.folders: name ''"),
    ("others", "folders", {"earlier": None}, "others.folders.earlier"),
    # Numbers YAML reads that no range check may let through: infinities and 64-bit overflows.
    ("train", "epochs", math.inf, "train.epochs is inf"),
    ("train", "learning_rate", math.inf, "train.learning_rate is inf"),
    ("train", "warmup_steps", -math.inf, "train.warmup_steps is -inf"),
    ("train", "max_grad_norm", math.inf, "train.max_grad_norm is inf"),
    ("evaluate", "max_new_tokens", 10**30, "evaluate.max_new_tokens"),
    ("prepare", "max_records", {"train": 10**5000 // 10**4000}, "prepare.max_records.train"),
    # Code that runs at training time must not be named in params.
    ("train", "attn_implementation", "kernels-community/flash-attn", "train.attn_implementation"),
    ("train", "model_init_kwargs", {"attn_implementation": "kernels-community/flash-attn"},
     "train.model_init_kwargs.attn_implementation"),
    ("train", "model_init_kwargs", {"trust_remote_code": True}, "train.model_init_kwargs.trust_remote_code"),
    ("train", "push_to_hub", True, "train.push_to_hub"),
    ("train", "hub_model_id", "someone/model", "train.hub_model_id"),
    ("train", "resume_from_checkpoint", "/etc", "train.resume_from_checkpoint"),
    ("train", "chat_template_path", "someone/templates", "train.chat_template_path"),
    # Secrets under keys no fixed pattern lists, and by the shape of their value under any key.
    ("train", "dataset_kwargs", {"huggingface_token": "PlantedInParams4d4d"}, "train.dataset_kwargs.huggingface_token"),
    ("prepare", "datasets", [{"dataset": "x", "github_token": "PlantedInParams3c3c"}], "prepare.datasets[0].github_token"),
    ("train", "dataset_kwargs", {"apikey": "PlantedInParams2b2b"}, "train.dataset_kwargs.apikey"),
    ("train", "dataset_kwargs", {"private_key": "PlantedInParams1a1a"}, "train.dataset_kwargs.private_key"),
    ("train", "dataset_kwargs", {"openaiApiKey": "PlantedInParams5e5e"}, "train.dataset_kwargs.openaiApiKey"),
    ("train", "run_name", "hf_PlantedInParamsAbCdEfGhIjKlMnOpQr01", "train.run_name"),
    ("train", "dataset_kwargs", {"note": "ghp_PlantedInParams0123456789abcdefABCD"}, "train.dataset_kwargs.note"),
    ("forgetting", "dataset", "https://someone:PlantedInParams@example.com/data", "forgetting.dataset"),
    ("train", "hub_model_id", "PlantedInParamsX9aB7cD2eF4gH6iJ8kL0mN1o", "train.hub_model_id"),
]


def stage_commands() -> dict[str, tuple[str, list[str], list[str]]]:
    """Each params section -> the first stage of dvc.yaml that reads it whole: (module, argv, outputs)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    by_section = {}
    for name, stage in stages.items():
        if isinstance(stage.get("foreach"), str):  # over a params section: reads one key of it (others.hub.<name>)
            continue
        if "foreach" in stage:  # evaluate: its first item
            key, item = next(iter(stage["foreach"].items()))
            stage = yaml.safe_load(yaml.safe_dump(stage["do"]).replace("${item}", item).replace("${key}", key))
        words = stage["cmd"].split()
        assert words[:2] == ["python", "-m"], name
        outputs = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", []) + stage.get("metrics", [])]
        for section in stage.get("params", []):
            if isinstance(section, str) and "." not in section:
                by_section.setdefault(section, (words[2], words[3:], outputs))
    return {**by_section, **NOT_STAGES}


def test_every_key_of_params_yaml_has_a_bad_value_here():
    from conftest import section_classes

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(BAD) == set(params)
    for section, values in params.items():
        assert set(BAD[section]) == set(values), section
        assert set(section_classes()[section].__dataclass_fields__) <= set(values), section
    assert set(stage_commands()) == set(params), "every section is read whole by a stage of dvc.yaml (or NOT_STAGES)"


def run_stage(tmp_path, monkeypatch, capsys, section: str, key: str, value) -> str:
    """The stage reading `section`, run in a folder holding an earlier run's outputs and params.yaml
    with `key` set to `value`; returns its stderr once it has exited 2 leaving every file as it was."""
    module, argv, outputs = stage_commands()[section]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params[section][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    for output in outputs:  # a file, or a folder holding one
        path = tmp_path / output / "earlier" if "." not in output.split("/")[-1] else tmp_path / output
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("an earlier run's output")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", [module, *argv])
    monkeypatch.setattr("os.execvpe", lambda *a: pytest.fail("accelerate was started"))
    monkeypatch.setattr("sft.launch.exit_status", lambda *a: pytest.fail("accelerate was started"))
    with pytest.raises(SystemExit) as stopped:
        run(stage_main(module.removeprefix("stages.")) if module.startswith("stages.")
            else importlib.import_module(module).main)  # sft.launch, which starts the train stage
    assert stopped.value.code == 2
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("section, key", [(s, k) for s, keys in BAD.items() for k in keys])
def test_a_bad_value_of_every_key_stops_its_stage_with_one_line(tmp_path, monkeypatch, capsys, section, key):
    err = run_stage(tmp_path, monkeypatch, capsys, section, key, BAD[section][key])
    assert f"{section}.{key}" in err


@pytest.mark.parametrize("section, key, value, named", MORE)
def test_nan_fractions_and_secrets_stop_the_stage_with_one_line(tmp_path, monkeypatch, capsys, section, key, value,
                                                               named):
    err = run_stage(tmp_path, monkeypatch, capsys, section, key, value)
    assert named in err
    assert "Planted" not in err  # a secret's key is named, never its value
