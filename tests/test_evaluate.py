import json

from stages import evaluate
from stages.generation import generate, render_prompts
from stages.models import load_folder

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
    evaluate.main()
    metrics = json.loads((tmp_path / "metrics" / "baseline.json").read_text())
    predictions = (tmp_path / "metrics" / "predictions" / "baseline.jsonl").read_text().splitlines()
    assert metrics["samples"] == 3 and len(predictions) == 3
    # A random model writes no SQL: every prediction must score as wrong and unrunnable.
    assert metrics["execution_accuracy"] == 0.0 and metrics["execution_error_rate"] == 1.0
