"""What varies by machine stays out of hashed outputs: the split of figures, and the scrub of
files that libraries write (trainer state, tokenizer config, adapter config, model card)."""

import json

from sft import volatile


def test_figures_split_into_reproducible_and_machine_dependent():
    figures = {"eval_loss": 0.04, "global_step": 40, "train_seconds": 336.1, "tokens_per_second": 166.0,
               "peak_memory_gb": 3.54, "generated_tokens": 900, "generation_seconds": 72.7}
    stable, speed = volatile.split(figures)
    assert stable == {"eval_loss": 0.04, "global_step": 40, "generated_tokens": 900}
    assert set(speed) == {"train_seconds", "tokens_per_second", "peak_memory_gb", "generation_seconds"}


def test_scrub_makes_library_files_independent_of_the_machine(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-2").mkdir(parents=True)
    state = {"global_step": 2, "log_history": [
        {"loss": 1.5, "step": 1, "num_input_tokens_seen": 100},
        {"eval_loss": 1.2, "eval_runtime": 0.02, "eval_samples_per_second": 176.5, "eval_steps_per_second": 44.1,
         "step": 2},
        {"train_loss": 1.4, "train_runtime": 0.16, "train_tokens_per_second": 4287.7, "total_flos": 12.0, "step": 2}]}
    for folder in (run, run / "checkpoint-2"):
        (folder / "trainer_state.json").write_text(json.dumps(state))
    (run / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "local_files_only": True,
                                                           "is_local": True}))
    (run / "checkpoint-2" / "adapter_config.json").write_text(json.dumps({"r": 8, "target_modules": ["v", "q", "k"]}))
    (run / "README.md").write_text("---\nlibrary_name: transformers\ntags:\n- trl\n- sft\nlicence: x\n---\n\n# Card\n")

    volatile.scrub(run)
    for folder in (run, run / "checkpoint-2"):
        history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
        assert history == [{"loss": 1.5, "step": 1, "num_input_tokens_seen": 100}, {"eval_loss": 1.2, "step": 2},
                           {"train_loss": 1.4, "total_flos": 12.0, "step": 2}]
    assert json.loads((run / "tokenizer_config.json").read_text()) == {"eos_token": "<|im_end|>"}
    assert json.loads((run / "checkpoint-2" / "adapter_config.json").read_text())["target_modules"] == ["k", "q", "v"]
    assert (run / "README.md").read_text() == "---\nlibrary_name: transformers\ntags:\n- sft\n- trl\nlicence: x\n---\n\n# Card\n"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    volatile.scrub(run)  # idempotent: a second scrub changes nothing
    assert before == {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
