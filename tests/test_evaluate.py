"""evaluate: generation as trained (same prompt tokens), batched equal to one at a time, metrics and
predictions written, the GPU used when there is one, vLLM falling back without one."""

import json

import pytest

from sft import checkpoints, models
from sft.device import generation_backend
from sft.generation import generate, prompt_ids, render_prompts
from sft.models import load_folder, load_for_inference
from sft.params import UserError
from stages import evaluate

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
        evaluate.EvaluateParams(backend="tgi")


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
        evaluate.replies_of(str(tiny_model_dir), [PROMPT], evaluate.EvaluateParams(backend="transformers"))
    with pytest.raises(RuntimeError, match="placement seen"):  # select and merge load through here
        checkpoints.trained_model(str(tiny_model_dir), tmp_path, "float32")
    assert placed == ["cuda", "cuda"]
