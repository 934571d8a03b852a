"""forgetting: the general-text loss of two models, paired by document. Zero for a model against
itself, positive for one trained until it fits a narrow task, each document's loss independent of
its batch; a record without the text, or with an empty one, stops the stage naming it."""

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, stage_main, tiny_params

from sft import sources
from sft.forgetting import difference, document_text, mean_losses, token_ids
from sft.models import load_folder, save_tokenizer
from sft.params import UserError

GENERAL = ROOT / "data" / "general" / "python-reference.jsonl"


def run_stage(folder: Path, monkeypatch, base: Path, model: Path, **changes) -> dict:
    params = tiny_params()
    params["forgetting"] |= {"dataset": str(GENERAL)} | changes
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(folder)
    monkeypatch.setattr("sys.argv", ["forgetting", "--base", str(base), "--model", str(model), "--out", "f.json"])
    stage_main("forgetting")()
    return json.loads((folder / "f.json").read_text())


def test_a_model_against_itself_forgot_nothing(tiny_model_dir, tmp_path, monkeypatch):
    figures = run_stage(tmp_path, monkeypatch, tiny_model_dir, tiny_model_dir)
    assert figures["documents"] == tiny_params()["forgetting"]["max_documents"]
    assert figures["difference"] == figures["difference_ci_low"] == figures["difference_ci_high"] == 0.0
    assert figures["base_loss"] == figures["finetuned_loss"] > 0


def overfit(model_dir: Path, out: Path, text: str, steps: int = 60) -> Path:
    """The model trained on one narrow text until it knows it by heart."""
    model, tokenizer = load_folder(model_dir)
    torch.manual_seed(0)
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.5, "the narrow text was not learned"
    model.save_pretrained(out)
    save_tokenizer(tokenizer, out)
    return out


def test_a_model_overfit_to_a_narrow_task_finds_general_text_less_likely(tiny_model_dir, tmp_path, monkeypatch):
    narrow = overfit(tiny_model_dir, tmp_path / "narrow", "SELECT name FROM employees WHERE salary_k > 50;")
    figures = run_stage(tmp_path, monkeypatch, tiny_model_dir, narrow, max_documents=24)
    assert figures["finetuned_loss"] > figures["base_loss"]
    assert figures["difference_ci_low"] > 0, figures


def test_each_documents_loss_is_the_same_alone_or_in_a_padded_batch(tiny_model_dir):
    model, tokenizer = load_folder(tiny_model_dir)
    texts = ["A short one.", "A much longer document about nothing in particular, and then some more words.",
             "Middling text here."]
    ids = token_ids(tokenizer, texts, max_length=64)
    batched = mean_losses(model, ids, batch_size=3, pad_id=0)
    alone = [mean_losses(model, [x], batch_size=1, pad_id=0)[0] for x in ids]
    assert batched == pytest.approx(alone, rel=1e-5)


def test_chat_documents_are_rendered_by_the_chat_template(tiny_model_dir):
    _, tokenizer = load_folder(tiny_model_dir)
    chat = [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "General Kenobi"}]
    text = document_text(sources.Record("chat.jsonl:1", {"messages": chat}), "messages", tokenizer)
    assert text == tokenizer.apply_chat_template(chat, tokenize=False) and "General Kenobi" in text


@pytest.mark.parametrize("line, said", [
    ('{"body": "text under another name"}', "general.jsonl:2: no field 'text' (it has ['body']); set forgetting.text_field"),
    ('{"text": "   "}', "general.jsonl:2: 'text' is neither non-empty text nor a list of {role, content} messages"),
    ('{"text": [{"role": "user"}]}', "general.jsonl:2: 'text' is neither non-empty text"),
])
def test_a_record_without_usable_text_stops_the_stage_naming_it(tiny_model_dir, tmp_path, monkeypatch, line, said):
    data = tmp_path / "general.jsonl"
    data.write_text('{"text": "A fine document."}\n' + line + "\n")
    with pytest.raises(UserError, match=re.escape(said)):
        run_stage(tmp_path, monkeypatch, tiny_model_dir, tiny_model_dir, dataset=str(data))
    assert not (tmp_path / "f.json").exists()


def test_a_missing_dataset_or_split_names_the_key_to_set(tiny_model_dir, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="^forgetting.dataset 'nowhere/general.jsonl': no such file"):
        run_stage(tmp_path, monkeypatch, tiny_model_dir, tiny_model_dir, dataset="nowhere/general.jsonl")
    with pytest.raises(UserError, match=r"no split 'test' \(it has \['train'\]\); set forgetting.split"):
        run_stage(tmp_path, monkeypatch, tiny_model_dir, tiny_model_dir, split="test")


def test_the_difference_is_paired_by_document():
    base, tuned = [1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5, 4.5]  # every document +0.5: no spread at all
    figures = difference(base, tuned)
    assert figures["difference"] == figures["difference_ci_low"] == figures["difference_ci_high"] == 0.5
    assert figures["base_loss"] == 2.5 and figures["finetuned_loss"] == 3.0 and figures["documents"] == 4
