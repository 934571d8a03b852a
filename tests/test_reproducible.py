"""Reproducible bytes: the tiny graph run in two directories (different paths, one with
HF_HUB_OFFLINE=1 and one without, different hash seeds, and the second on a simulated CPU without
AVX-512 or AMX: ATen, MKL and oneDNN capped at AVX2) gives the same dvc.lock hash for every output. What varies by machine lives only in metrics/speed/, which no stage declares as an output."""

import json

import pytest
import yaml
from conftest import AVX2_CPU, copy_repository, dvc

pytestmark = pytest.mark.slow

SPEED = ("metrics/speed/train.json", "metrics/speed/baseline.json", "metrics/speed/finetuned.json",
         "metrics/speed/fewshot.json")


def lock_outputs(repo) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def test_two_directories_give_the_same_lock_for_every_output(tiny_run, tmp_path):
    first = tiny_run  # run with HF_HUB_OFFLINE=1 and PYTHONHASHSEED=1, on this machine's CPU
    second = copy_repository(tmp_path / "elsewhere" / "second")
    dvc(second, "repro", env={"HF_HUB_OFFLINE": None, "PYTHONHASHSEED": "2", **AVX2_CPU})

    a, b = lock_outputs(first), lock_outputs(second)
    assert {"models/base", "models/train", "models/merged", "metrics/train", "metrics/train.json",
            "metrics/predictions/finetuned.jsonl"} <= a.keys() == b.keys()
    differ = sorted(path for path in a if a[path] != b[path])
    assert differ == [], f"outputs that depend on the machine, path or environment: {differ}"
    assert not [path for path in a if path.startswith("metrics/speed")]
    # The speed files were written, and did differ run to run: what the lock leaves out is real.
    assert [(first / p).is_file() and (second / p).is_file() for p in SPEED] == [True] * len(SPEED)
    assert any(json.loads((first / p).read_text()) != json.loads((second / p).read_text()) for p in SPEED)
    assert set(yaml.safe_load((first / "dvc.yaml").read_text())["metrics"]) == set(SPEED)
