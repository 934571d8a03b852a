"""prepare: record shapes, splits, lengths, and bad input that stops with one clear line."""

import json
import re
import subprocess
import sys

import pytest
from conftest import ROOT, stage_main

from sft import shapes, sources
from sft.params import UserError
from sft.preparation import PrepareParams
from sft.prompts import load_templates
from sft.rows import convert
from sft.sources import Record
from sft.splits import split_records, without_overlap
from sft.task import load_task

SQL = {"sql_prompt": "How many items?", "sql_context": "CREATE TABLE t (id INT);", "sql": "SELECT COUNT(*) FROM t;"}
USER, ANSWER = "How many items?", "SELECT COUNT(*) FROM t;"


def sql_rows(records, **params):
    p = PrepareParams(prompts=str(ROOT / "prompts" / "sql"), **params)
    return convert([Record(f"data.jsonl:{i}", r) for i, r in enumerate(records, 1)], p,
                   load_templates(p.prompts), ["sql_context"])


def test_sql_templates_render_prompt_completion():
    [row] = sql_rows([SQL])
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert USER in row["prompt"][1]["content"] and "CREATE TABLE t" in row["prompt"][1]["content"]
    assert row["completion"] == [{"role": "assistant", "content": ANSWER}]
    assert row["references"] == {"sql_context": "CREATE TABLE t (id INT);"}
    assert load_task(ROOT / "prompts" / "sql").metric == "sql_execution"


@pytest.mark.parametrize("fields, shape", [
    ({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": USER},
                   {"role": "assistant", "content": ANSWER}]}, "messages"),
    ({"prompt": USER, "completion": ANSWER}, "prompt_completion"),
    ({"prompt": [{"role": "user", "content": USER}], "completion": [{"role": "assistant", "content": ANSWER}]},
     "prompt_completion"),
    ({"instruction": USER, "input": "", "output": ANSWER}, "alpaca"),
    ({"conversations": [{"from": "human", "value": USER}, {"from": "gpt", "value": ANSWER}]}, "sharegpt"),
])
def test_every_shape_becomes_the_same_prompt_completion(fields, shape):
    assert shapes.detect(fields) == shape
    prompt, completion = shapes.CONVERTERS[shape](fields, "x", None)
    assert prompt[-1] == {"role": "user", "content": USER}
    assert completion == [{"role": "assistant", "content": ANSWER}]


def test_alpaca_input_follows_the_instruction():
    prompt, _ = shapes.from_alpaca({"instruction": "Translate.", "input": "Bonjour", "output": "Hello"}, "x", None)
    assert prompt == [{"role": "user", "content": "Translate.\n\nBonjour"}]


@pytest.mark.parametrize("record, message", [
    ({k: v for k, v in SQL.items() if k != "sql_prompt"}, r"data.jsonl:2: .*user.jinja: 'sql_prompt' is undefined"),
    ({**SQL, "sql_prompt": None}, r"data.jsonl:2: field 'sql_prompt' is null; .*user.jinja needs it"),
    ({**SQL, "sql": "  "}, r"data.jsonl:2: the completion .* is empty"),
    ({**SQL, "sql_context": None}, r"data.jsonl:2: field 'sql_context' is null"),
])
def test_bad_records_name_the_record_the_field_and_the_fix(record, message):
    with pytest.raises(UserError, match=message):
        sql_rows([SQL, record])


@pytest.mark.parametrize("fields, message", [
    ({"messages": [{"role": "user", "content": USER}]}, "last turn must be the assistant"),
    ({"messages": [{"role": "user", "content": USER}, {"role": "assistant", "content": ""}]}, "completion is empty"),
    ({"conversations": [{"from": "bot", "value": USER}]}, "'from' is 'bot'"),
    ({"prompt": USER, "completion": None}, "field 'completion' is missing or null"),
])
def test_bad_chat_records(fields, message):
    with pytest.raises(UserError, match=message):
        shapes.non_empty(*shapes.CONVERTERS[shapes.detect(fields)](fields, "f.jsonl:3", None), "f.jsonl:3")


def test_only_train_is_split_with_the_seed():
    raw = {"train": [Record(str(i), {"i": i}) for i in range(100)]}
    p = PrepareParams(seed=1, split_fractions={"validation": 0.1, "test": 0.2})
    a, b = split_records(raw, p), split_records(raw, p)
    assert a == b and {k: len(v) for k, v in a.items()} == {"train": 70, "validation": 10, "test": 20}
    assert sorted(r.fields["i"] for rows in a.values() for r in rows) == list(range(100))


def test_missing_validation_is_cut_from_train_the_size_of_test():
    raw = {"train": [Record(str(i), {}) for i in range(50)], "test": [Record(str(i), {}) for i in range(8)]}
    splits = split_records(raw, PrepareParams())
    assert len(splits["validation"]) == 8 and len(splits["train"]) == 42


def test_prompts_seen_in_test_are_dropped_from_train_and_validation():
    row = lambda q: {"prompt": [{"role": "user", "content": q}]}  # noqa: E731
    rows, dropped = without_overlap({"train": [row("a"), row("b"), row("c")], "validation": [row("b"), row("d")],
                                     "test": [row("a")]})
    assert dropped == {"validation": 0, "train": 2} and [r["prompt"][0]["content"] for r in rows["train"]] == ["c"]


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": 2,}\n')
    with pytest.raises(UserError, match=r"d.jsonl:3: not valid JSON .*fix or remove the line"):
        sources.jsonl_records(path)
    path.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(UserError, match=r"d.jsonl:2: bytes that are not UTF-8 at column 11; re-encode"):
        sources.jsonl_records(path)
    path.write_bytes(b'[1, 2]\n')
    with pytest.raises(UserError, match=r"d.jsonl:1: a JSONL line must be a JSON object"):
        sources.jsonl_records(path)


def test_csv_and_parquet_and_folders_load(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"prompt": ["a", "b"], "completion": ["x", "y"]})
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.to_parquet(tmp_path / "test.parquet")
    loaded = sources.load(str(tmp_path))
    assert [r.fields for r in loaded["train"]] == [{"prompt": "a", "completion": "x"}, {"prompt": "b", "completion": "y"}]
    assert len(loaded["test"]) == 2 and loaded["test"][1].where.endswith("test.parquet record 2")


def test_unknown_dataset_and_subset_list_what_exists(tmp_path):
    (tmp_path / "fr_de").mkdir()
    (tmp_path / "de_fr").mkdir()
    with pytest.raises(UserError, match=r"no subset 'fr_it'.*available: \['de_fr', 'fr_de'\]"):
        sources.load(str(tmp_path), subset="fr_it")
    with pytest.raises(UserError, match=r"no such file or folder \(.* holds \['de_fr', 'fr_de'\]\)"):
        sources.load(str(tmp_path / "nope.jsonl"))


@pytest.mark.parametrize("dataset, hub_id", [
    ("gretelai/synthetic_text_to_sql", "gretelai/synthetic_text_to_sql"),  # owner/name, not here: the hub
    ("hf:squad", "squad"),  # an owner-less hub dataset, said explicitly
    ("mydata", None), ("my_data/train.jsonl", None), ("./a/b", None), ("data/raw/x", None), ("a/b/c", None),
])
def test_a_hub_id_is_owner_slash_name_or_says_hf(dataset, hub_id):
    assert sources.hub_id(dataset) == hub_id


def test_a_missing_local_folder_is_an_error_not_a_hub_dataset(tmp_path, monkeypatch):
    """A bare name used to be tried on the hub: a typo of a local folder loaded someone's dataset."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mydata").mkdir()
    monkeypatch.setattr(sources, "hub", lambda *a: pytest.fail("the hub was asked"))
    with pytest.raises(UserError, match=r"prepare.dataset 'mydat': no such file or folder \(\./ holds \['mydata'\]\); "
                                        r"a hub dataset is named owner/name, or hf:<name>"):
        sources.load("mydat")


def test_duplicate_ids_in_a_split_are_an_error_naming_both_records(tmp_path, tokenizer_dir):
    data = tmp_path / "d"
    data.mkdir()
    rows = [{"id": f"r{i}", "prompt": f"q{i}", "completion": "a"} for i in range(6)]
    rows[4]["id"] = "r1"
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "test.jsonl").write_text(json.dumps({"id": "r1", "prompt": "t", "completion": "a"}) + "\n")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "task.yaml").write_text("metric: exact_match\n")
    write_params(tmp_path, data, tmp_path / "p", "  split_fractions: {validation: 0.2}\n")
    done = run_prepare(tmp_path, tokenizer_dir)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert re.search(r"d/train.jsonl:5: id 'r1' is also the id of .*d/train.jsonl:2 \(\w+ split\); ids must be "
                     "unique within a split", done.stderr), done.stderr
    assert not (tmp_path / "out").exists()


def write_params(tmp_path, dataset, prompts, extra="", max_length=512):
    (tmp_path / "params.yaml").write_text(
        f"prepare:\n  dataset: {dataset}\n  prompts: {prompts}\n{extra}  max_length: {max_length}\n")


def run_prepare(tmp_path, model):
    return subprocess.run([sys.executable, "-m", "stages.prepare", "--model", str(model), "--out", "out",
                           "--metrics", "m.json"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def test_main_writes_splits_audit_and_metrics(tmp_path, tokenizer_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, ROOT / "data" / "raw" / "sql", ROOT / "prompts" / "sql",
                 "  max_records: {train: 20, validation: 5, test: 7}\n")
    monkeypatch.setattr("sys.argv", ["prepare", "--model", str(tokenizer_dir), "--out", "out", "--metrics", "m.json"])
    stage_main("prepare")()
    lines = {s: (tmp_path / "out" / f"{s}.jsonl").read_text().splitlines() for s in ("train", "validation", "test")}
    assert {s: len(v) for s, v in lines.items()} == {"train": 20, "validation": 5, "test": 7}
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["records"] == {"train": 20, "validation": 5, "test": 7}
    assert 0.05 < metrics["label_share"]["train"] < 0.3
    assert metrics["tokens"]["train"]["p50"] <= metrics["tokens"]["train"]["p95"] <= metrics["tokens"]["train"]["max"]
    audit = (tmp_path / "out" / "audit.md").read_text()
    # The masked span ends with the assistant header; the trained span is the query and end of turn.
    assert "<|im_start|>assistant\n»⟦SELECT" in audit and "<|im_end|>\n⟧" in audit
    assert not list((tmp_path / "out").glob(".*.tmp"))
    # What train reads: a token row a record, in the records' order, with the settings applied;
    # the audit's first example is those same tokens.
    from sft import handoff, tokens

    assert handoff.settings(tmp_path / "out") == {"max_length": 512, "train_on": "all_assistant"}
    rows = {s: handoff.token_rows(tmp_path / "out", s) for s in handoff.TRAINED_SPLITS}
    assert {s: len(r) for s, r in rows.items()} == {"train": 20, "validation": 5}
    assert not (tmp_path / "out" / "test.tokens.jsonl").exists()  # test is generated from, never trained on
    first = tokens.Tokenized(**rows["train"][0])
    assert tokens.marked_example(tokens.fast_tokenizer(tokenizer_dir), first) in audit
    assert len(first.input_ids) == len(first.assistant_masks) and 0 < sum(first.assistant_masks) < len(first.input_ids)
    assert max(len(r["input_ids"]) for r in rows["train"]) == metrics["tokens"]["train"]["max"]


def test_too_long_is_an_error_by_default_and_dropped_on_request(tmp_path, tokenizer_dir):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": "word " * n, "completion": "ok", "id": f"r{n}"}) + "\n"
                            for n in (5, 200, 6, 300)))
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "task.yaml").write_text("metric: sql_execution\n")
    write_params(tmp_path, data, tmp_path / "p", "  split_fractions: {validation: 0, test: 0}\n", max_length=100)
    done = run_prepare(tmp_path, tokenizer_dir)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: 2 train record(s) longer than prepare.max_length=100: ")
    named = re.findall(r"(\S+):(\d) \((\d+) tokens\)", done.stderr)  # every record by file and line
    assert sorted((path, line) for path, line, _ in named) == [(str(data), "2"), (str(data), "4")]
    assert "prepare.on_too_long: drop" in done.stderr and not (tmp_path / "out").exists()

    write_params(tmp_path, data, tmp_path / "p", "  split_fractions: {validation: 0, test: 0}\n"
                 "  on_too_long: drop\n", max_length=100)
    done = run_prepare(tmp_path, tokenizer_dir)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "m.json").read_text())["dropped_too_long"]["train"] == 2
    assert len((tmp_path / "out" / "train.jsonl").read_text().splitlines()) == 2


def test_bad_input_stops_with_one_line_and_keeps_earlier_outputs(tmp_path, tokenizer_dir):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "task.yaml").write_text("metric: sql_execution\n")
    write_params(tmp_path, data, tmp_path / "p", "  split_fractions: {validation: 0, test: 0}\n")
    assert run_prepare(tmp_path, tokenizer_dir).returncode == 0
    before = (tmp_path / "out" / "train.jsonl").read_bytes()

    data.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "a" "completion": "b"}\n')
    done = run_prepare(tmp_path, tokenizer_dir)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"{data}:2: not valid JSON" in done.stderr
    assert (tmp_path / "out" / "train.jsonl").read_bytes() == before

    write_params(tmp_path, data, tmp_path / "p", "  shuffle_seed: 3\n")
    done = run_prepare(tmp_path, tokenizer_dir)
    assert done.returncode == 2 and "unknown key 'shuffle_seed'" in done.stderr


def test_format_sql_filter_pretty_prints():
    from sft.prompts import format_sql

    assert format_sql("select a, b from t where x = 1") == "SELECT a,\n       b\nFROM t\nWHERE x = 1"


def test_a_declared_answer_that_no_gold_holds_stops_prepare(tmp_path, tokenizer_dir):
    (tmp_path / "p").mkdir()
    for name in ("system.jinja", "user.jinja", "assistant.jinja"):
        (tmp_path / "p" / name).write_text((ROOT / "prompts" / "arithmetic" / name).read_text())
    (tmp_path / "p" / "task.yaml").write_text("metric: answer_match\nanswer:\n  pattern: 'ANSWER:\\s*(\\d+)'\n"
                                              "  compare: numeric\n")
    write_params(tmp_path, ROOT / "data" / "raw" / "arithmetic", tmp_path / "p")
    done = run_prepare(tmp_path, tokenizer_dir)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"error: {tmp_path / 'p'}/task.yaml: the declared answer is found in none of the 20 gold" in done.stderr
    assert not (tmp_path / "out").exists()

    (tmp_path / "p" / "task.yaml").write_text("metric: answer_match\nanswer:\n  pattern: '####\\s*\\d+'\n")
    done = run_prepare(tmp_path, tokenizer_dir)
    assert done.returncode == 2 and "task.yaml: answer.pattern '####\\\\s*\\\\d+' has no group" in done.stderr


@pytest.mark.parametrize("fields", [
    {"conversations": [{"role": "user", "content": USER}, {"role": "assistant", "content": ANSWER}]},
    {"messages": [{"role": "user", "content": USER}, {"role": "model", "content": ANSWER}]},  # Gemma's name
    {"conversations": [{"from": "human", "value": USER}, {"from": "model", "value": ANSWER}]},
])
def test_conversations_with_role_and_content_and_the_model_role_are_accepted(fields):
    prompt, completion = shapes.CONVERTERS[shapes.detect(fields)](fields, "x", None)
    assert prompt == [{"role": "user", "content": USER}] and completion == [{"role": "assistant", "content": ANSWER}]


def test_tool_turns_are_kept_in_the_prompt():
    turns = [{"role": "user", "content": "Weather in Bern?"}, {"role": "assistant", "content": "get_weather(Bern)"},
             {"role": "tool", "content": "12 C, rain"}, {"role": "assistant", "content": "12 degrees and rain."}]
    prompt, completion = shapes.from_messages({"messages": turns}, "x", None)
    assert [t["role"] for t in prompt] == ["user", "assistant", "tool"] and completion[0]["content"].startswith("12")


@pytest.mark.parametrize("turns, message", [
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}],
     "f.jsonl:3: turns 1 and 2 are both user turns; user and assistant turns must alternate"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "assistant", "content": "c"}],
     "f.jsonl:3: turns 2 and 3 are both assistant turns"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, {"role": "assistant", "content": "c"}],
     "f.jsonl:3: turn 2 is a system turn after the conversation started"),
    ([{"role": "narrator", "content": "a"}, {"role": "assistant", "content": "c"}], "f.jsonl:3: turn 1 must be"),
])
def test_turns_that_do_not_alternate_are_a_clear_error(turns, message):
    with pytest.raises(UserError, match=message):
        shapes.from_messages({"messages": turns}, "f.jsonl:3", None)


def test_a_role_the_chat_template_cannot_render_names_the_record(tokenizer_dir):
    from transformers import AutoTokenizer

    from sft import tokens

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.chat_template = (  # Gemma-like: only user and model/assistant turns
        "{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}"
        "{{ raise_exception('Conversation roles must be user or assistant') }}{% endif %}"
        "<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
    ok = {"id": 1, "prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "yo"}]}
    tool = {"id": 2, "_where": "d.jsonl:7", "prompt": [{"role": "user", "content": "hi"},
                                                       {"role": "assistant", "content": "call()"},
                                                       {"role": "tool", "content": "42"}],
            "completion": [{"role": "assistant", "content": "42"}]}
    with pytest.raises(UserError, match=r"d.jsonl:7: the model's chat template cannot render this conversation "
                                        r"\(roles \['user', 'assistant', 'tool', 'assistant'\]\): Conversation roles"):
        tokens.tokenized(tokenizer, [ok, tool], "all_assistant")


def test_multi_turn_records_train_every_assistant_turn(tmp_path, tokenizer_dir, monkeypatch):
    """The multi-turn example end to end through prepare: with all_assistant every answer is a
    trained span in the audit and counts in the label share; `last` trains only the final one;
    the test split still scores the last turn given the conversation before it."""
    monkeypatch.chdir(tmp_path)
    shares = {}
    for train_on in ("last", "all_assistant"):
        write_params(tmp_path, ROOT / "data" / "raw" / "arithmetic-chat", ROOT / "prompts" / "arithmetic-chat",
                     f"  train_on: {train_on}\n")
        monkeypatch.setattr("sys.argv", ["prepare", "--model", str(tokenizer_dir), "--out", train_on,
                                         "--metrics", f"{train_on}.json"])
        stage_main("prepare")()
        shares[train_on] = json.loads((tmp_path / f"{train_on}.json").read_text())["label_share"]
        audit = (tmp_path / train_on / "audit.md").read_text().split("## train record")[1]
        first = json.loads((tmp_path / train_on / "train.jsonl").read_text().splitlines()[0])
        answers = [t["content"] for t in first["prompt"] + first["completion"] if t["role"] == "assistant"]
        trained = re.findall(r"⟦(.*?)⟧", audit, re.S)
        assert trained == ([a + "<|im_end|>\n" for a in answers] if train_on == "all_assistant"
                           else [answers[-1] + "<|im_end|>\n"])
    assert shares["all_assistant"]["train"] > 1.5 * shares["last"]["train"]
    test = [json.loads(line) for line in (tmp_path / "all_assistant" / "test.jsonl").read_text().splitlines()]
    raw = json.loads((ROOT / "data" / "raw" / "arithmetic-chat" / "test.jsonl").read_text().splitlines()[0])
    assert test[0]["prompt"] == raw["messages"][:-1] and test[0]["completion"] == raw["messages"][-1:]
    assert [t["role"] for t in test[0]["prompt"]] == ["system", "user", "assistant", "user"]


def test_a_split_emptied_by_the_overlap_check_is_an_error(tmp_path, tokenizer_dir):
    """Found by the rehearsal: records that repeat one prompt all go to test, and train was left
    empty for the train stage to trip over; prepare now says so itself."""
    (tmp_path / "d").mkdir()
    for split, n in (("train", 8), ("test", 4)):  # validation is cut from train, the size of test
        (tmp_path / "d" / f"{split}.jsonl").write_text(
            "".join(json.dumps({"prompt": "same question", "completion": f"a{i}"}) + "\n" for i in range(n)))
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "task.yaml").write_text("metric: exact_match\n")
    write_params(tmp_path, tmp_path / "d", tmp_path / "p")
    done = run_prepare(tmp_path, tokenizer_dir)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no train records are left (of 4: 4 share a prompt with a test record" in done.stderr


@pytest.mark.parametrize("system, user, problem", [
    # A template that changes a list changes what the next template and the metric see: refused.
    ("{{ tags.append('leak') }}Be brief.", "{{ q }} {{ tags }}", "system.jinja: SecurityError: access to attribute "
                                                               "'append' of 'list' object is unsafe"),
    ("Be brief.", "{{ q.__class__.__mro__ }}", "user.jinja: SecurityError: access to attribute '__class__'"),
    ("Be brief.", "{% include 'secret.txt' %}", "user.jinja: TypeError: no loader for this environment specified"),
    ("Be brief.", "{{ n | format_sql }}", "user.jinja: TypeError: Expected text"),
])
def test_a_template_error_is_one_line_naming_the_template(tmp_path, system, user, problem):
    (tmp_path / "system.jinja").write_text(system)
    (tmp_path / "user.jinja").write_text(user)
    (tmp_path / "assistant.jinja").write_text("{{ a }}")
    record = {"q": "How many?", "tags": [], "n": 3, "a": "SELECT 1;"}
    with pytest.raises(UserError) as raised:
        load_templates(tmp_path).messages(record, "data.jsonl:4")
    message = str(raised.value)
    assert message.startswith(f"data.jsonl:4: {tmp_path}/") and problem in message and "\n" not in message
    assert record["tags"] == []


def test_a_column_may_have_any_name(tmp_path):
    """Records go to the template as one mapping: a column named `self` used to be a keyword clash."""
    (tmp_path / "user.jinja").write_text("{{ question }}")
    (tmp_path / "assistant.jinja").write_text("{{ answer }}")
    record = {"self": "x", "question": "Who?", "answer": "Me.", "environment": "y"}
    prompt, completion = load_templates(tmp_path).messages(record, "data.jsonl:1")
    assert prompt == [{"role": "user", "content": "Who?"}] and completion[0]["content"] == "Me."


def test_a_test_record_is_measured_by_its_prompt_not_its_gold(tmp_path, tokenizer_dir):
    """A model reads a test record's prompt and writes its own reply: a long gold (a long headnote)
    is no reason to drop the record, which would bias the test figures toward short cases."""
    data = tmp_path / "d"
    data.mkdir()
    train = [{"id": f"t{i}", "prompt": f"q {i}", "completion": "ok"} for i in range(4)]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    test = [{"id": "long-gold", "prompt": "short question", "completion": "word " * 300},
            {"id": "long-prompt", "prompt": "word " * 300, "completion": "ok"}]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "task.yaml").write_text("metric: exact_match\n")
    write_params(tmp_path, data, tmp_path / "p", "  split_fractions: {validation: 0}\n", max_length=100)
    done = run_prepare(tmp_path, tokenizer_dir)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert re.fullmatch(rf"error: 1 test record\(s\) whose prompt is longer than prepare.max_length=100: "
                        rf"{data}/test.jsonl:2 \(\d+ tokens\); .*\n", done.stderr), done.stderr

    write_params(tmp_path, data, tmp_path / "p", "  split_fractions: {validation: 0}\n  on_too_long: drop\n",
                 max_length=100)
    assert run_prepare(tmp_path, tokenizer_dir).returncode == 0
    kept = [json.loads(line)["id"] for line in (tmp_path / "out" / "test.jsonl").read_text().splitlines()]
    assert kept == ["long-gold"]
    assert json.loads((tmp_path / "m.json").read_text())["dropped_too_long"]["test"] == 1


def test_the_schemas_choices_are_the_converters_and_loss_spans_there_are():
    """prepare's section lists its choices beside its schema (sft/preparation.py imports only
    params, so the card that reads the section runs none of prepare's code): they must be what the
    code offers."""
    from sft import preparation, shapes, tokens

    assert set(preparation.SHAPES) == set(shapes.CONVERTERS)
    row = {"prompt": [{"role": "user"}, {"role": "assistant"}, {"role": "user"}], "completion": [{"role": "assistant"}]}
    # each choice is a loss span sft/tokens.py marks, and they differ
    assert {t: tokens.trained_turns(row, t) for t in preparation.TRAIN_ON} == {"all_assistant": [1, 3], "last": [3]}
