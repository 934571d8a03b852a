"""`make train-multi` without a GPU: a real 2-process DDP run over gloo on the CPU, run by DVC as an
experiment (dvc exp run -S launch.num_processes=2, nothing else), so its launch settings are in dvc.lock."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def test_train_multi_runs_two_cpu_processes_and_writes_once(repo_copy):
    repo = repo_copy
    venv = Path(sys.prefix)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS")}
    done = subprocess.run(["make", "train-multi", "NPROC=2", f"VENV={venv}", "-o", "setup"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

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
    assert "[launch] no CUDA GPU: 2 processes on the CPU over gloo" in done.stdout + done.stderr
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--csv"], cwd=repo, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    rows = list(csv.DictReader(shown))
    assert any(r.get("world_size") == "2" and r.get("launch.num_processes") == "2" for r in rows), shown[:3]
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", "train"], cwd=repo,
                            capture_output=True, text=True, check=True)
    assert json.loads(status.stdout) == {}
