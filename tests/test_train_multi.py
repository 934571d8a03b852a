"""`make train-multi` without a GPU: a real 2-process DDP run over gloo on the CPU, run by DVC as an
experiment (dvc exp run -S launch.num_processes=2, nothing else), so its launch settings are in dvc.lock."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def test_train_multi_runs_two_cpu_processes_and_writes_once(two_process_run):
    """`make train-multi NPROC=2` in a copy of the finished tiny run (conftest: two_process_run)."""
    repo, said = two_process_run
    metrics = json.loads((repo / "metrics" / "train.json").read_text())
    # 8 records, batch 4 per process, 2 processes: one step an epoch.
    assert metrics["world_size"] == 2 and metrics["global_step"] == 2 and metrics["global_batch"] == 8
    assert sorted(p.name for p in (repo / "models" / "train").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    evals = (repo / "metrics" / "train" / "plots" / "metrics" / "eval" / "loss.tsv").read_text().splitlines()
    assert len(evals) == 3  # header and one row an epoch: written by one process, not two
    # The launch settings are params of the train stage, recorded in dvc.lock and the experiment.
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train"]
    assert lock["params"]["params.yaml"]["launch"]["num_processes"] == 2
    assert yaml.safe_load((repo / "params.yaml").read_text())["launch"]["num_processes"] == 2
    assert "[launch] no CUDA GPU: 2 processes on the CPU over gloo" in said
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--csv"], cwd=repo, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    rows = list(csv.DictReader(shown))
    assert any(r.get("world_size") == "2" and r.get("launch.num_processes") == "2" for r in rows), shown[:3]
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", "train"], cwd=repo,
                            capture_output=True, text=True, check=True)
    assert json.loads(status.stdout) == {}


def test_two_machines_on_loopback_train_one_run_and_only_machine_0_writes_it(tiny_run, tmp_path):
    """docs/several-gpus-several-machines.md's recipe on one host: two clones as machines 0 and 1,
    one CPU process each, gloo over 127.0.0.1. Machine 0 runs `dvc repro train`, machine 1
    `make train-machine RANK=1`; one run of world size 2 and one global batch, written by machine 0."""
    from conftest import edit, free_port, run_copy

    port = free_port()
    # Copies of a finished run: the same data on every machine (a team would `dvc pull`); machine 1
    # holds none of train's outputs, as a machine that never trained.
    machines = [run_copy(tiny_run, tmp_path / f"machine-{rank}") for rank in (0, 1)]
    for repo in machines:
        edit(repo, lambda p: p["launch"].update(num_processes=2, num_machines=2, main_process_ip="127.0.0.1",
                                                main_process_port=port))
    shutil.rmtree(machines[1] / "models" / "train")
    shutil.rmtree(machines[1] / "metrics" / "train")
    (machines[1] / "metrics" / "train.json").unlink()
    lock_of_machine_1 = (machines[1] / "dvc.lock").read_text()
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    other = subprocess.Popen(["make", "train-machine", "RANK=1", f"VENV={sys.prefix}", "-o", "setup"],
                             cwd=machines[1], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        main = subprocess.run([sys.executable, "-m", "dvc", "repro", "train"], cwd=machines[0], env=env,
                              capture_output=True, text=True, timeout=900)
        said = other.communicate(timeout=300)[0]
    finally:
        other.kill()
    assert main.returncode == 0, main.stdout[-3000:] + main.stderr[-3000:]
    assert other.returncode == 0, said[-3000:]
    assert "[launch] machine 1 of 2: the train stage, outside DVC" in said

    metrics = json.loads((machines[0] / "metrics" / "train.json").read_text())
    # 8 records, batch 4 a process, a process on each machine: one global batch of 8 a step.
    assert metrics["world_size"] == 2 and metrics["global_batch"] == 8 and metrics["global_step"] == 2
    assert (machines[0] / "models" / "train" / "checkpoint-2").is_dir()
    lock = yaml.safe_load((machines[0] / "dvc.lock").read_text())["stages"]
    assert lock["train"]["params"]["params.yaml"]["launch"]["num_machines"] == 2
    for output in ("models/train", "metrics/train", "metrics/train.json"):
        assert not (machines[1] / output).exists(), f"machine 1 wrote {output}"
    assert (machines[1] / "dvc.lock").read_text() == lock_of_machine_1
