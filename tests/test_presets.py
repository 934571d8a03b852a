"""The workshop's three use cases: each preset's params and templates, offline, on stand-in records
with the real column names and the tiny model's tokenizer."""

import json

import pytest
import yaml
from conftest import ROOT, section_classes, stage_main

from sft import training
from sft.params import from_dict

DECISION = "Le recourant conteste la décision de l'autorité cantonale concernant le permis de construire."
STAND_INS = {
    "text-to-sql": {
        "id": 5097, "domain": "forestry", "domain_description": "Forest data.", "sql_complexity": "single join",
        "sql_complexity_description": "one inner join", "sql_task_type": "analytics and reporting",
        "sql_task_type_description": "reports", "sql_prompt": "What is the total volume of timber sold by each salesperson?",
        "sql_context": "CREATE TABLE salesperson (salesperson_id INT, name TEXT); "
                       "CREATE TABLE timber_sales (sales_id INT, salesperson_id INT, volume REAL);",
        "sql": "select salesperson.name, sum(volume) from salesperson join timber_sales on "
               "salesperson.salesperson_id = timber_sales.salesperson_id group by salesperson.name;",
        "sql_explanation": "Joins the tables and sums the volume."},
    "headnotes": {
        "sample_id": 7, "decision": DECISION, "decision_language": "fr", "headnote": "Art. 22 RPG. Baubewilligung.",
        "headnote_language": "de", "law_area": "public_law", "year": 2015, "volume": "II", "url": "https://example"},
    "medqa": {
        "id": "medqa-1", "messages": [
            {"role": "system", "content": "You are a helpful doctor."},
            {"role": "user", "content": "A 23-year-old presents with ... Which is the best next step?\n"
                                        "(A) Observe (B) Antibiotics (C) Surgery (D) Imaging"},
            {"role": "assistant", "content": "Fever and ... suggest infection. Therefore, the answer is (B)."}]},
}
EXPECTED = {  # the user turn starts so, the completion holds this (the workshop's turns, in our words)
    "text-to-sql": ("Prompt:\nWhat is the total volume", "```sql\nSELECT salesperson.name,\n       sum(volume)\nFROM"),
    "headnotes": ("Prompt:\nGenerate a headnote in German for the leading decision below.\n\nLeading decision:\n",
                  "Art. 22 RPG"),
    "medqa": ("A 23-year-old presents", "the answer is (B)"),
}


@pytest.mark.parametrize("name", [*sorted(STAND_INS), "tiny"])
def test_preset_params_are_valid_for_every_stage(name, tmp_path):
    params = yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text())
    assert set(params) == set(section_classes())
    for section, cls in section_classes().items():
        if section == "train":
            continue  # its SFTConfig keys are checked by training.load_params below
        from_dict(cls, params[section], f"{name}: {section}")  # raises on an unknown key
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    p, sft = training.load_params(str(tmp_path / "params.yaml"))
    assert p.epochs == params["train"]["epochs"] and sft["learning_rate"] == params["train"]["learning_rate"]


def test_presets_carry_the_workshop_settings():
    sql, headnotes, medqa = (yaml.safe_load((ROOT / "presets" / f"{n}.yaml").read_text())
                             for n in ("text-to-sql", "headnotes", "medqa"))
    assert sql["base"]["model_name_or_path"] == "google/gemma-3-270m-it" and sql["train"]["method"] == "full"
    assert sql["train"]["learning_rate"] == 2e-5 and sql["train"]["per_device_train_batch_size"] == 4
    assert headnotes["prepare"]["subset"] == "fr_de" and headnotes["train"]["method"] == "qlora"
    assert (headnotes["train"]["lora_r"], headnotes["train"]["lora_alpha"], headnotes["train"]["lora_dropout"]) == (32, 16, 0.1)
    assert headnotes["prepare"]["max_length"] == 8192 and headnotes["base"]["model_class"] == "AutoModelForImageTextToText"
    assert medqa["train"]["epochs"] == 10 and medqa["train"]["per_device_eval_batch_size"] == 1
    assert medqa["select"]["metric"] == "eval_loss"
    # The workshop's warmup (warmup_ratio 0.03 and 0.1, here as fractions below 1) and medqa's 90/5/5.
    assert (sql["train"]["warmup_steps"], headnotes["train"]["warmup_steps"], medqa["train"]["warmup_steps"]) == \
        (0.03, 0.1, 0.1)
    assert medqa["prepare"]["split_fractions"] == {"validation": 0.05, "test": 0.05}
    assert all(p["train"]["attn_implementation"] == "flash_attention_2" for p in (headnotes, medqa))


@pytest.mark.parametrize("name", sorted(STAND_INS))
def test_preset_prepares_stand_in_records(name, tmp_path, tokenizer_dir, monkeypatch):
    params = yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text())
    records = [{**STAND_INS[name], "copy": i} for i in range(6)]
    for i, r in enumerate(records):  # distinct prompts and ids, so the split overlap check keeps them all
        if "id" in r:
            r["id"] = f"{r['id']}-{i}"
        if "messages" in r:
            r["messages"] = [dict(m) for m in r["messages"]]
            r["messages"][1]["content"] += f" #{i}"
        else:
            key = "sql_prompt" if "sql_prompt" in r else "decision"
            r[key] = f"{r[key]} #{i}"
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    params["prepare"].update(dataset=str(tmp_path / "data.jsonl"), subset=None, revision=None,
                             prompts=str(ROOT / params["prepare"]["prompts"]),
                             split_fractions={"validation": 1 / 6, "test": 1 / 6})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["prepare", "--model", str(tokenizer_dir), "--out", "out", "--metrics", "m.json"])
    stage_main("prepare")()
    [row] = [json.loads(line) for line in (tmp_path / "out" / "test.jsonl").read_text().splitlines()]
    prompt_text, completion = row["prompt"][-1]["content"], row["completion"][0]["content"]
    assert prompt_text.startswith(EXPECTED[name][0]) and EXPECTED[name][1] in completion, (prompt_text, completion)
    if name == "text-to-sql":  # the schema after the question; the fenced gold scores as its query
        from sft.metrics import sql_execution

        assert "\n\nSchema:\nCREATE TABLE" in prompt_text and completion.endswith("\n```")
        context = row["references"]
        assert sql_execution(completion, completion, context)["execution_accuracy"] == 1.0
        assert sql_execution(completion.strip("`").removeprefix("sql\n"), completion, context)["exact_match"] == 1.0
    if name == "headnotes":
        system = row["prompt"][0]["content"]
        assert "not plain summaries" in system and "4." in system and system.endswith("Reply with the headnote only.")
    assert json.loads((tmp_path / "m.json").read_text())["records"] == {"train": 4, "validation": 1, "test": 1}


@pytest.mark.parametrize("name", sorted(STAND_INS))
def test_dvc_accepts_every_preset(name, repo_copy):
    """A preset names a hub dataset: the graph's deps must still exist, so DVC can plan the run."""
    import subprocess
    import sys

    (repo_copy / "params.yaml").write_text((ROOT / "presets" / f"{name}.yaml").read_text())
    done = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=repo_copy,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert {"base", "prepare", "train"} <= set(json.loads(done.stdout))
