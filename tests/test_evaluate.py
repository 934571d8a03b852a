"""evaluate: generation as trained (same prompt tokens), batched equal to one at a time, metrics and
predictions written, the GPU used when there is one, vLLM falling back without one."""

import json
import os
from pathlib import Path

import pytest
from conftest import stage_main

from sft import checkpoints, evaluation, generation, models
from sft.device import generation_backend
from sft.evaluation import EvaluateParams
from sft.generation import generate, prompt_ids, render_prompts
from sft.models import load_folder, load_for_inference
from sft.params import UserError

PROMPT = [{"role": "system", "content": "Reply with SQL."}, {"role": "user", "content": "How many rows?"}]


def test_evaluation_prompt_is_the_training_prompt_byte_for_byte(tiny_model_dir):
    _, tokenizer = load_folder(tiny_model_dir)
    completion = [{"role": "assistant", "content": "SELECT COUNT(*) FROM t;"}]
    trained = tokenizer.apply_chat_template(PROMPT + completion, tokenize=False)
    [seen] = render_prompts(tokenizer, [PROMPT])
    assert trained.startswith(seen) and trained[len(seen):].startswith("SELECT COUNT(*)")


def test_batched_generation_matches_one_at_a_time(tiny_model_dir):
    model, tokenizer = load_folder(tiny_model_dir)
    prompts = [PROMPT, [{"role": "user", "content": "A much longer question about many many tables?"}]]
    batched, speed = generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=2)
    single = [generate(model, tokenizer, [p], max_new_tokens=6, batch_size=1)[0][0] for p in prompts]
    assert batched == single and speed["generated_tokens"] > 0


def test_main_writes_metrics_and_predictions(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    context = "CREATE TABLE t (id INT); INSERT INTO t VALUES (1), (2);"
    rows = [{"id": i, "prompt": PROMPT, "completion": [{"role": "assistant", "content": "SELECT COUNT(*) FROM t;"}],
             "references": {"sql_context": context}} for i in range(3)]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "task.json").write_text(json.dumps({"metric": "sql_execution", "references": ["sql_context"]}))
    (tmp_path / "params.yaml").write_text("evaluate:\n  max_new_tokens: 4\n  batch_size: 2\n")
    monkeypatch.setattr("sys.argv", ["evaluate", "--model", str(tiny_model_dir), "--name", "baseline",
                                     "--data", str(data), "--out", "metrics"])
    stage_main("evaluate")()
    metrics = json.loads((tmp_path / "metrics" / "baseline.json").read_text())
    predictions = (tmp_path / "metrics" / "predictions" / "baseline.jsonl").read_text().splitlines()
    assert metrics["samples"] == 3 and len(predictions) == 3
    # A random model writes no SQL: every prediction must score as wrong and unrunnable.
    assert metrics["execution_accuracy"] == 0.0 and metrics["execution_error_rate"] == 1.0
    assert metrics["execution_accuracy_ci_low"] == 0.0 and 0.4 < metrics["execution_accuracy_ci_high"] < 0.6
    assert metrics["unparseable_rate"] == 1.0 and "tokens_per_second" not in metrics
    speed = json.loads((tmp_path / "metrics" / "speed" / "baseline.json").read_text())
    assert speed["tokens_per_second"] > 0 and speed["backend"] == "transformers"
    assert json.loads((tmp_path / "metrics" / "confusion" / "baseline.json").read_text()) == []  # no letters


def test_evaluation_token_ids_are_the_training_prompt_tokens(tiny_model_dir, tmp_path):
    """Both backends are fed prompt_ids; trl's tokenization of the same record for training must
    begin with exactly those ids (the prompt part, which carries no loss)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_folder(tiny_model_dir)
    completion = [{"role": "assistant", "content": "SELECT COUNT(*) FROM t;"}]
    data = Dataset.from_list([{"prompt": PROMPT, "completion": completion}])
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=data,
                         args=SFTConfig(output_dir=str(tmp_path), report_to="none", max_length=512, bf16=False))
    row = trainer.train_dataset[0]
    trained_prompt = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label == -100]
    [ids] = prompt_ids(tokenizer, [PROMPT])
    assert trained_prompt == ids
    assert tokenizer.decode(ids) == render_prompts(tokenizer, [PROMPT])[0]


def test_backend_choice_without_a_gpu(capsys):
    assert generation_backend("auto") == "transformers"
    assert generation_backend("vllm") == "transformers"
    assert "evaluate.backend vllm -> transformers" in capsys.readouterr().out
    with pytest.raises(UserError, match="evaluate.backend 'tgi'"):
        generation_backend("tgi")
    with pytest.raises(UserError, match="evaluate.backend is 'tgi'; use one of auto, transformers, vllm, llamacpp"):
        EvaluateParams(backend="tgi")


def test_stages_that_only_run_a_model_put_it_on_the_gpu_when_there_is_one(tiny_model_dir, tmp_path, monkeypatch):
    import torch

    model, _ = load_for_inference(tiny_model_dir)  # no GPU here: the CPU, and it loads
    assert model.device.type == "cpu"
    placed = []

    def load_pretrained(source, **kwargs):
        placed.append(kwargs.get("device_map"))
        raise RuntimeError("placement seen")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(models, "load_pretrained", load_pretrained)
    with pytest.raises(RuntimeError, match="placement seen"):
        evaluation.replies_of(str(tiny_model_dir), [PROMPT], EvaluateParams(backend="transformers"),
                            tmp_path / "kept", "baseline")
    with pytest.raises(RuntimeError, match="placement seen"):  # select and merge load through here
        checkpoints.trained_model(str(tiny_model_dir), tmp_path, "float32", {"adapter": None, "quantization": None})
    assert placed == ["cuda", "cuda"]


def sql_split(tmp_path, contexts: list[str], gold: str = "SELECT COUNT(*) FROM t;") -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    rows = [{"id": i, "prompt": [*PROMPT[:1], {"role": "user", "content": f"Question {i}?" + " more" * i}],
             "completion": [{"role": "assistant", "content": gold}], "references": {"sql_context": context}}
            for i, context in enumerate(contexts)]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "task.json").write_text(json.dumps({"metric": "sql_execution", "references": ["sql_context"]}))
    return data


def run_evaluate(tmp_path, model, data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["evaluate", "--model", str(model), "--name", "finetuned", "--data", str(data),
                                     "--out", "metrics"])
    stage_main("evaluate")()
    return (tmp_path / "metrics" / "predictions" / "finetuned.jsonl").read_text()


CONTEXT = "CREATE TABLE t (id INT); INSERT INTO t VALUES (1), (2);"


def test_replies_are_kept_before_scoring_so_a_failed_or_killed_run_never_generates_them_again(
        tiny_model_dir, tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("evaluate:\n  max_new_tokens: 4\n  batch_size: 2\n")
    data = sql_split(tmp_path, [CONTEXT] * 5)
    straight = run_evaluate(tmp_path, tiny_model_dir, data, monkeypatch)
    for kept in (tmp_path / "metrics" / "replies.partial").iterdir():
        kept.unlink()

    # Killed after the first batch of two: those two replies are on disk, nothing was scored.
    real_keep = evaluation.replies.Kept.keep
    def killed_after_one_batch(self, batch):
        real_keep(self, batch)
        raise KeyboardInterrupt
    monkeypatch.setattr(evaluation.replies.Kept, "keep", killed_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        run_evaluate(tmp_path, tiny_model_dir, data, monkeypatch)
    monkeypatch.setattr(evaluation.replies.Kept, "keep", real_keep)

    # Then scoring fails: the three other replies are generated once and kept.
    generated = []
    real_generate = generation.generate
    monkeypatch.setattr(generation, "generate", lambda *a: generated.append(a[5]) or real_generate(*a))
    monkeypatch.setattr(evaluation, "scores", lambda *a: (_ for _ in ()).throw(RuntimeError("scorer bug")))
    with pytest.raises(RuntimeError, match="scorer bug"):
        run_evaluate(tmp_path, tiny_model_dir, data, monkeypatch)
    assert len(generated) == 1 and len(generated[0]) == 2  # it knew the 2 kept replies

    # A fixed scorer reads every reply back: no model is loaded, the predictions are the straight run's.
    monkeypatch.undo()
    monkeypatch.setattr(models, "load_for_inference", lambda *a, **k: pytest.fail("a model was loaded"))
    assert run_evaluate(tmp_path, tiny_model_dir, data, monkeypatch) == straight
    speed = json.loads((tmp_path / "metrics" / "speed" / "finetuned.json").read_text())
    assert speed["kept_replies"] == 5 and speed["generated_tokens"] == 0

    # Another setting decides other replies: they are not read back.
    (tmp_path / "params.yaml").write_text("evaluate:\n  max_new_tokens: 3\n  batch_size: 2\n")
    with pytest.raises(pytest.fail.Exception, match="a model was loaded"):
        run_evaluate(tmp_path, tiny_model_dir, data, monkeypatch)


def test_kept_replies_are_keyed_by_every_module_that_can_change_a_reply(tiny_model_dir, tmp_path, monkeypatch):
    """The key covers the generation code and all it imports (sft/attention.py once was left out,
    so a reply kept by older attention code would have been read back for the new code's)."""
    from tools.deps import ROOT, closure

    keyed = {str(Path(m.__file__).resolve().relative_to(ROOT)) for m in evaluation.GENERATION_CODE}
    # Error messages (and the credentials they refuse), progress bars and machine-varying figures
    # cannot change a reply; sft/__init__.py only calls sft/numerics.py, which is keyed, and quiets a log.
    assert keyed == closure(ROOT / "sft" / "generation.py") - {
        "sft/__init__.py", "sft/params.py", "sft/secrets.py", "sft/progress.py", "sft/volatile.py"}
    p = EvaluateParams()
    key = evaluation.kept_replies(str(tiny_model_dir), [[]], p, "transformers", tmp_path, "x").path
    edited = tmp_path / "attention.py"
    edited.write_text(Path(evaluation.attention.__file__).read_text() + "\n# edited\n")
    monkeypatch.setattr(evaluation.attention, "__file__", str(edited))
    assert evaluation.kept_replies(str(tiny_model_dir), [[]], p, "transformers", tmp_path, "x").path != key


HOSTILE_REPLIES = ["SELECT zeroblob(999999999) FROM t;", "SELECT randomblob(20000000) FROM t, t a, t b, t c;",
                   "SELECT 1;\x00 DROP TABLE t;", "SELECT '\ud800';", "ATTACH DATABASE '{out}/r.db' AS y; "
                   "CREATE TABLE y.z (a);", "VACUUM INTO '{out}/v.db';", "SELECT load_extension('{out}/x.so');",
                   "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r;",
                   "x" * 5_000_000]
HOSTILE_CONTEXTS = [CONTEXT + " ATTACH DATABASE '{out}/c.db' AS y; CREATE TABLE y.z (a);",
                    CONTEXT + " VACUUM INTO '{out}/cv.db';",
                    CONTEXT + " WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r;"]


def test_evaluate_scores_hostile_replies_and_contexts_wrong_in_bounded_time_and_memory(tiny_model_dir, tmp_path):
    """Replies with allocation bombs, NUL bytes, surrogates, ATTACH and VACUUM INTO, on a split whose
    own contexts attach, vacuum into files and never end: the stage completes, its peak memory
    stays bounded, no file appears outside its outputs, and every hostile record scores wrong."""
    import subprocess
    import sys

    from conftest import ROOT

    outside = tmp_path / "outside"
    outside.mkdir()
    replies = [r.replace("{out}", str(outside)) for r in HOSTILE_REPLIES] + ["SELECT COUNT(*) FROM t;"] * 3
    contexts = [CONTEXT] * len(HOSTILE_REPLIES) + [c.replace("{out}", str(outside)) for c in HOSTILE_CONTEXTS]
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text("evaluate:\n  max_new_tokens: 4\n")
    data = sql_split(work, contexts)
    p = EvaluateParams(max_new_tokens=4)
    prompts = [json.loads(line)["prompt"] for line in (data / "test.jsonl").read_text().splitlines()]
    kept = evaluation.kept_replies(str(tiny_model_dir), prompts, p, "transformers", work / "metrics" / "replies.partial",
                                 "finetuned")
    kept.keep(dict(enumerate(replies)))  # as if the model had answered so
    before = {p for p in work.rglob("*")}
    # The stage in a process of its own, reporting its own peak memory (VmHWM) when it ends.
    probe = ("import runpy, sys; sys.argv = sys.argv[1:]\ntry:\n runpy.run_module('stages.evaluate', run_name='__main__')\n"
             "finally:\n print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0], file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe, "evaluate", "--model", str(tiny_model_dir), "--name",
                           "finetuned", "--data", str(data), "--out", "metrics"], cwd=work, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    peak_mb = int(done.stderr.split("VmHWM:")[1].split()[0]) / 1024
    assert peak_mb < 2500, f"peak memory {peak_mb:.0f} MB"
    assert list(outside.iterdir()) == []
    made = {str(p.relative_to(work)) for p in set(work.rglob("*")) - before if p.is_file()}
    assert made == {"metrics/finetuned.json", "metrics/predictions/finetuned.jsonl", "metrics/confusion/finetuned.json",
                    "metrics/speed/finetuned.json"}
    rows = [json.loads(line) for line in (work / "metrics" / "predictions" / "finetuned.jsonl").read_text().splitlines()]
    assert [r["execution_accuracy"] for r in rows] == [0.0] * (len(HOSTILE_REPLIES) + 3), rows
    assert [r["scoring_error"] for r in rows[-3:]] == [1.0] * 3  # the record's own SQL passed a bound: counted
    assert "kept by an earlier run" in done.stdout


def test_the_vllm_backend_reserves_only_the_context_it_needs(tiny_model_dir, monkeypatch):
    """vLLM is not installed here: a stand-in module records what the backend asks of it. The
    engine is sized to the longest prompt plus max_new_tokens; the same prompt ids go in."""
    import sys
    import types

    from sft.generation import generate_vllm
    from sft.models import load_tokenizer

    seen = {}

    class LLM:
        def __init__(self, **kwargs):
            seen["engine"] = kwargs

        def generate(self, requests, params):
            seen["requests"], seen["params"] = requests, params
            out = types.SimpleNamespace(text="SELECT 1;", token_ids=[1, 2, 3])
            return [types.SimpleNamespace(outputs=[out]) for _ in requests]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(
        LLM=LLM, SamplingParams=lambda **kw: kw))
    tokenizer = load_tokenizer(tiny_model_dir)
    prompts = [PROMPT, [{"role": "user", "content": "A much longer question about many many tables?"}]]
    replies, speed = generate_vllm(str(tiny_model_dir), tokenizer, prompts, 16, "float32")
    ids = prompt_ids(tokenizer, prompts)
    assert seen["engine"] == {"model": str(tiny_model_dir), "dtype": "float32", "seed": 0,
                              "max_model_len": max(map(len, ids)) + 16}
    assert [r["prompt_token_ids"] for r in seen["requests"]] == ids
    assert seen["params"] == {"temperature": 0.0, "max_tokens": 16}
    assert replies == ["SELECT 1;"] * 2 and speed["generated_tokens"] == 6


def test_generation_shows_progress_with_an_eta_in_a_few_lines_of_a_log(tiny_model_dir):
    """Not a terminal (CI, `dvc repro > log`): one line per tenth of the prompts, each with the count,
    tokens per second and an ETA, and the last one at 100%."""
    import io

    from sft.progress import Progress

    log = io.StringIO()
    with Progress(40, "[evaluate] baseline: generating", stream=log) as progress:
        for _ in range(40):
            progress.update(1, tokens=7)
    lines = log.getvalue().splitlines()
    assert len(lines) == 10, lines
    assert lines[0].startswith("[evaluate] baseline: generating: 4/40 prompts (10%)") and "ETA" in lines[0]
    assert "tok/s" in lines[0] and lines[-1].startswith("[evaluate] baseline: generating: 40/40 prompts (100%)")

    # The stages' generation reports through it: 5 prompts in batches of 2 end at 5/5.
    model, tokenizer = load_folder(tiny_model_dir)
    prompts = [[{"role": "user", "content": f"Question {i}?"}] for i in range(5)]
    import contextlib

    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        generation.replies((model, tokenizer), prompts, generation.Settings(4, batch_size=2), label="gen")
    assert log.getvalue().splitlines()[-1].startswith("gen: 5/5 prompts (100%)"), log.getvalue()
