"""Resolved revisions: what a hub branch or tag pointed at, recorded in pin.json and prepare's
metrics whenever the hub answers (a fake answer here: these machines have no hub)."""

import json
from types import SimpleNamespace

import pytest
import yaml
from conftest import ROOT, stage_main

from sft import hub

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def fake_hub(monkeypatch):
    from huggingface_hub import HfApi

    asked = []

    def answer(self, repo_id, revision=None):
        asked.append((repo_id, revision))
        return SimpleNamespace(sha=SHA)

    monkeypatch.setattr(HfApi, "model_info", answer)
    monkeypatch.setattr(HfApi, "dataset_info", answer)
    return asked


def test_a_branch_resolves_to_the_commit_the_hub_names(fake_hub, tmp_path):
    assert hub.resolved_revision("google/gemma-3-4b-it", "main") == SHA
    assert hub.resolved_revision("ipst/slds", "main", "dataset") == SHA
    assert fake_hub == [("google/gemma-3-4b-it", "main"), ("ipst/slds", "main")]
    assert hub.resolved_revision(str(tmp_path), "main") is None  # a local folder has no hub commit


def test_no_answer_is_no_revision(monkeypatch):
    from huggingface_hub import HfApi

    def offline(self, repo_id, revision=None):
        raise OSError("offline")

    monkeypatch.setattr(HfApi, "model_info", offline)
    assert hub.resolved_revision("google/gemma-3-4b-it", "main") is None


def test_pin_and_prepare_metrics_record_the_resolved_revision(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hub, "resolved_revision", lambda repo, revision, kind="model": SHA)  # as if from the hub
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "base": {"model_name_or_path": str(tiny_model_dir), "gguf_file": None, "gguf_sha256": None, "revision": "main"},
        "prepare": {"dataset": str(ROOT / "data" / "raw" / "arithmetic"), "prompts": str(ROOT / "prompts" / "arithmetic"),
                    "revision": "main", "max_length": 1024}}))
    monkeypatch.setattr("sys.argv", ["base", "--out", "models/base"])
    stage_main("base")()
    pin = json.loads((tmp_path / "models" / "base" / "pin.json").read_text())
    assert pin["revision"] == "main" and pin["resolved_revision"] == SHA
    monkeypatch.setattr("sys.argv", ["prepare", "--model", "models/base", "--out", "out", "--metrics", "m.json"])
    stage_main("prepare")()
    assert json.loads((tmp_path / "m.json").read_text())["resolved_revisions"] == {"arithmetic": SHA}
