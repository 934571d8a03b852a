"""`make rehearse NAME=<preset>`: each workshop preset end to end on the CPU with a tiny Gemma 3 of
its real architecture, and the fixes the rehearsal found, checked on what it wrote."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from rehearsal import estimate, gemma, standin


def rehearse(name: str, workdir: Path) -> tuple[Path, str]:
    done = subprocess.run([sys.executable, "-m", "rehearsal", name, "--workdir", str(workdir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return workdir / "repo", done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", ["text-to-sql", "headnotes", "medqa"])
def test_every_preset_rehearses_end_to_end(name, tmp_path):
    from transformers import AutoProcessor, GenerationConfig

    repo, out = rehearse(name, tmp_path)
    assert f"rehearse {name}: passed" in out.splitlines()[-2]
    assert out.splitlines()[0].startswith("[rehearse] before renting, for google/gemma-3-")  # printed first
    preset = json.loads(json.dumps(__import__("yaml").safe_load((ROOT / "presets" / f"{name}.yaml").read_text())))
    config = json.loads((repo / "models" / "base" / "config.json").read_text())
    vision = preset["base"]["model_class"] == "AutoModelForImageTextToText"
    assert config["architectures"] == ["Gemma3ForConditionalGeneration" if vision else "Gemma3ForCausalLM"]
    for folder in ("base", "merged"):
        generation = GenerationConfig.from_pretrained(repo / "models" / folder)
        # Gemma's pad (0) is kept, and the baseline stops at <end_of_turn> as the merged model does.
        assert generation.pad_token_id == 0 and gemma.END_OF_TURN in generation.eos_token_id
        if vision:  # the processor vLLM and AutoProcessor need travels with the weights
            assert type(AutoProcessor.from_pretrained(repo / "models" / folder)).__name__ == "Gemma3Processor"
    # Export ran through llama.cpp's SentencePiece path, as it will for the real Gemma: the
    # tokenizer.model and the special flags travelled from base to merged, and the GGUF's
    # tokenizer gives the prompt ids training used.
    assert (repo / "models" / "merged" / "tokenizer.model").is_file()
    exported = json.loads((repo / "metrics" / "export.json").read_text())
    assert exported["same_prompt_token_ids"] == exported["parity_prompts"] > 0, exported
    assert (repo / "models" / "gguf" / "model-f16.gguf").is_file()
    # Both baselines and the general-text loss ran with the preset's own settings.
    forgetting = json.loads((repo / "metrics" / "forgetting.json").read_text())
    assert forgetting["documents"] == preset["forgetting"]["max_documents"] and forgetting["base_loss"] > 0
    assert json.loads((repo / "metrics" / "compare.json").read_text())["against_fewshot"]["fewshot"] is not None
    merge = json.loads((repo / "metrics" / "merge.json").read_text())
    if preset["train"]["method"] == "qlora":
        assert "[train] QLoRA: 22 linear layers hold 4-bit NF4 weights" in out
        assert merge["parity_reference"] == "the adapter on the 4-bit NF4 base (as trained)"
    prepared = json.loads((repo / "metrics" / "prepare.json").read_text())
    if name == "headnotes":  # the long tail past max_length is dropped and counted, not an error
        assert sum(prepared["dropped_too_long"].values()) > 0
    assert json.loads((repo / "metrics" / "train.json").read_text())["global_step"] > 0
    assert (repo / "metrics" / "compare.json").is_file()
    # The preset's hub benchmark tasks: the shipped suite stands in for them offline, on both models.
    bench = json.loads((repo / "metrics" / "benchmarks" / "finetuned.json").read_text())
    assert set(bench["tasks"]) == {"sft_general", "sft_reading"} and bench["settings"]["limit"] == 8
    paired = json.loads((repo / "metrics" / "compare.json").read_text())["benchmarks"]
    assert set(paired) == set(bench["tasks"]) and paired["sft_reading"]["acc"]["items"] == 8
    assert paired["sft_reading"]["acc"]["finetuned"] == bench["tasks"]["sft_reading"]["acc"]
    assert "| `sft_reading` | `acc` | 8 | " in (repo / "models" / "card" / "merged" / "README.md").read_text()
    # A preset that names a judge (headnotes: a larger Gemma on the hub) is judged by the tiny base.
    judged = repo / "metrics" / "judge" / "tiny.json"
    assert judged.is_file() == bool(preset["judge"]["hub"] or preset["judge"]["folders"])
    if judged.is_file():
        figures = json.loads(judged.read_text())
        assert figures["items"] == 4 and figures["judged"] + figures["no_verdict"] == 4
        assert f"judge win rate {figures['win_rate']}" in out and "Judged by tiny" in \
            (repo / "models" / "card" / "merged" / "README.md").read_text()


def test_standin_records_have_the_spec_columns_and_a_long_tail():
    spec = standin.load_spec(ROOT / "prompts" / "headnotes")
    records = standin.records(spec, seed=0)
    assert {k: len(v) for k, v in records.items()} == spec["splits"]
    words = [len(r["decision"].split()) for rows in records.values() for r in rows]
    assert min(words) >= 2500 and max(words) > 8192 and sorted(words)[len(words) // 2] < 7000
    assert set(records["train"][0]) == set(spec["rows"][0])
    sql = standin.records(standin.load_spec(ROOT / "prompts" / "text-to-sql"), seed=0)
    prompts = [r["sql_prompt"] for rows in sql.values() for r in rows]
    assert len(set(prompts)) == len(prompts)  # `unique`: no stand-in shares a prompt with another


def test_tiny_gemma_has_gemmas_special_tokens_template_and_stops(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sft import stops

    out = gemma.build(tmp_path / "g", "AutoModelForCausalLM", ["the answer is (B)"] * 10, vocab_size=300)
    tokenizer, model = AutoTokenizer.from_pretrained(out), AutoModelForCausalLM.from_pretrained(out)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) == (0, 1, 2)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    assert stops.end_of_turn_id(tokenizer) == gemma.END_OF_TURN
    model.generation_config.pad_token_id = 5  # set_stops must restore the tokenizer's own pad, even id 0
    stops.set_stops(model, tokenizer)
    assert model.generation_config.pad_token_id == 0 and model.generation_config.eos_token_id == [1, gemma.END_OF_TURN]


def test_the_throwaway_copy_takes_any_file_name_without_a_shell(tmp_path):
    """make smoke and the rehearsals copy the repository through copy_repository: a file named
    like a command substitution is copied as a name, never run."""
    import subprocess

    from rehearsal.workspace import copy_repository

    source = tmp_path / "source"
    source.mkdir()
    hostile = "x$(touch INJECTED).txt"
    (source / hostile).write_text("data")
    (source / "a b;c.txt").write_text("more")
    subprocess.run(["git", "init", "-q"], cwd=source, check=True)
    copied = copy_repository(tmp_path / "copy", source=source)
    assert (copied / hostile).read_text() == "data" and (copied / "a b;c.txt").read_text() == "more"
    assert not list(tmp_path.rglob("INJECTED")) and not (Path.cwd() / "INJECTED").exists()


@pytest.mark.parametrize("model, model_class, published", [
    ("google/gemma-3-270m-it", "AutoModelForCausalLM", 268_098_176),
    ("google/gemma-3-4b-it", "AutoModelForImageTextToText", 4_300_079_472)])
def test_the_shipped_architectures_are_the_published_models(model, model_class, published):
    counts = estimate.counts(estimate.config_file(model), model_class)
    assert counts.total == published  # every parameter of the published model, the tied embedding once
    assert counts.linear < counts.text <= counts.total


def test_the_memory_estimate_is_within_a_quarter_of_what_the_h200_measured():
    """bench/mfu.py's full fine-tune of gemma-3-270m in bf16 (fused AdamW, no checkpointing) at
    1024 tokens: torch's measured peak, plain loss and liger-kernel, against the estimate."""
    measured = json.loads((ROOT / "bench" / "results" / "gpu-nvidia-h200.json").read_text())
    counts = estimate.counts(estimate.config_file("google/gemma-3-270m-it"), "AutoModelForCausalLM")
    assert len(measured["train"]) == 3
    for run in measured["train"]:
        train = {"method": "full", "model_init_kwargs": {"dtype": "bfloat16"}, "bf16": True, "optim": "adamw_torch_fused",
                 "gradient_checkpointing": False, "use_liger_kernel": run["side"] == "liger", "fused_lm_head": False}
        parts = estimate.training_memory(counts, train, run["batch"], measured["seq"])
        allocated = sum(parts.values()) - parts["CUDA context"]  # torch's peak counts no context
        assert 0.75 < allocated / run["peak_memory_gb"] < 1.25, (run, parts)


def test_before_renting_says_memory_and_disk_for_each_preset_and_what_changes_them():
    import yaml

    lines = {}
    for name in ("text-to-sql", "headnotes", "medqa"):
        preset = yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text())
        lines[name] = estimate.before_renting(preset)
        assert "GPU memory training" in lines[name] and "disk ~" in lines[name]
    assert "batch 16 x 8192 tokens" in lines["medqa"] and "10 checkpoints" in lines["medqa"]
    counts = estimate.counts(estimate.config_file("google/gemma-3-4b-it"), "AutoModelForImageTextToText")
    train = {"method": "qlora", "model_init_kwargs": {"dtype": "bfloat16"}, "bf16": True, "lora_r": 32}
    memory = {m: sum(estimate.training_memory(counts, {**train, "method": m}, 4, 2048).values())
              for m in ("qlora", "lora", "full")}
    assert memory["qlora"] < memory["lora"] < memory["full"]
    plain = estimate.training_memory(counts, {**train, "fused_lm_head": False}, 4, 2048)
    assert plain["logits"] > 10  # 8192 tokens x 262k logits: the reason for liger / the fused LM head
    unchecked = estimate.training_memory(counts, {**train, "gradient_checkpointing": False}, 4, 2048)
    assert unchecked["activations"] > 5 * estimate.training_memory(counts, train, 4, 2048)["activations"]
    assert estimate.before_renting({"base": {"model_name_or_path": "someone/unknown"}}) is None
