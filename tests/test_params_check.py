"""tools/params_check.py: every section checked before DVC starts, so a bad value stops `make repro`
in one line with every output of the last run still in place."""

import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT
from test_bad_params import BAD, MORE

from sft.params import UserError, run
from tools.params_check import check


def params_with(tmp_path, section, key, value):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params[section][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_the_committed_params_pass():
    assert sorted(check(str(ROOT / "params.yaml"))) == sorted(yaml.safe_load((ROOT / "params.yaml").read_text()))


@pytest.mark.parametrize("section, key, value", [(s, k, v) for s, keys in BAD.items() for k, v in keys.items()]
                         + [(s, k, v) for s, k, v, _ in MORE])
def test_a_bad_value_of_any_section_is_caught_before_any_stage(tmp_path, monkeypatch, section, key, value):
    monkeypatch.chdir(ROOT)  # launch.config_file is a path from the repository root
    with pytest.raises(UserError) as stopped:
        check(str(params_with(tmp_path, section, key, value)))
    assert section in str(stopped.value) and "Planted" not in str(stopped.value)


def test_make_repro_with_a_bad_param_stops_before_dvc_removes_an_output(tmp_path):
    """DVC deletes a stage's outputs before running it; the check runs before DVC does."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "Makefile", repo)
    shutil.copy(ROOT / "dvc.yaml", repo)
    (repo / "configs").symlink_to(ROOT / "configs")
    params_with(repo, "train", "lora_r", 0)
    trained = repo / "models" / "train" / "adapter_model.safetensors"
    trained.parent.mkdir(parents=True)
    trained.write_bytes(b"the last run's weights")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True, env=env)
    done = subprocess.run(["make", "-s", "-o", "setup", f"VENV={sys.prefix}", "repro"], cwd=repo, env=env, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "train.lora_r is 0" in done.stderr and "Running stage" not in done.stdout + done.stderr
    assert trained.read_bytes() == b"the last run's weights"


def test_a_stage_run_by_dvc_says_how_to_bring_its_outputs_back(monkeypatch, capsys):
    def main():
        raise UserError("params.yaml: train.lora_r is 0; it must be >= 1")

    monkeypatch.setenv("DVC_STAGE", "train")
    with pytest.raises(SystemExit):
        run(main)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.lora_r is 0" in err and "`dvc checkout train` brings back" in err
