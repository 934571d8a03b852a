"""Train, select and merge on the tiny model: labels, checkpoints per epoch, a faithful merge."""

import json
import subprocess

import pytest
import torch
from conftest import ROOT

from stages import merge, select, sources, train
from stages.files import write_jsonl
from stages.models import load_folder
from stages.params import UserError
from stages.prepare import PrepareParams, convert
from stages.prompts import load_templates

PARAMS = """\
train:
  method: lora
  epochs: 2
  lora_r: 8
  lora_alpha: 16
  learning_rate: 5.0e-3
  per_device_train_batch_size: 4
  per_device_eval_batch_size: 4
  max_length: 512
  logging_steps: 1
  seed: 0
  activation_checkpointing: false
select:
  metric: eval_loss
merge:
  dtype: float32
"""


def prepared(folder, n_train=8, n_val=4):
    p = PrepareParams(prompts=str(ROOT / "prompts" / "sql"))
    records = sources.read_jsonl(ROOT / "data" / "raw" / "sql" / "train.jsonl")
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", convert(records[:n_train], p, load_templates(p.prompts), ["sql_context"]))
    write_jsonl(folder / "validation.jsonl",
                convert(records[n_train:n_train + n_val], p, load_templates(p.prompts), ["sql_context"]))
    return folder


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """One real run of the train stage on the tiny model, in a scratch git repository."""
    work = tmp_path_factory.mktemp("train")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "--allow-empty", "-m", "x"],
                   cwd=work, check=True)
    (work / "params.yaml").write_text(PARAMS)
    prepared(work / "data")
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    mp.setattr("sys.argv", ["train", "--model", str(tiny_model_dir), "--data", "data", "--out", "out",
                            "--metrics", "train.json", "--live", "live"])
    train.main()
    mp.undo()
    return work


def test_prompt_tokens_carry_no_loss(tiny_model_dir, tmp_path):
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_folder(tiny_model_dir)
    data = train.prompt_completion(prepared(tmp_path / "data", 2, 1) / "train.jsonl")
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=data,
                         args=SFTConfig(output_dir=str(tmp_path / "o"), report_to="none", max_length=512, bf16=False))
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    trained = tokenizer.decode(ids[labels != -100])
    completion = json.loads((tmp_path / "data" / "train.jsonl").read_text().splitlines()[0])["completion"][0]["content"]
    assert trained.startswith(completion) and trained.rstrip().endswith("<|im_end|>")
    prompt_len = len(tokenizer.apply_chat_template(
        json.loads((tmp_path / "data" / "train.jsonl").read_text().splitlines()[0])["prompt"],
        add_generation_prompt=True, tokenize=True)["input_ids"])
    assert (labels[:prompt_len] == -100).all() and (labels[prompt_len:] != -100).any()


def test_unknown_train_key_names_the_closest_sft_argument(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  learning_rat: 0.1\n")

    with pytest.raises(UserError, match="did you mean 'learning_rate'"):
        train.load_params(str(tmp_path / "params.yaml"))


def test_a_checkpoint_and_an_evaluation_every_epoch(trained):
    state = json.loads((trained / "out" / "trainer_state.json").read_text())
    evals = [h for h in state["log_history"] if "eval_loss" in h]
    assert [e["epoch"] for e in evals] == [1.0, 2.0]
    assert sorted(p.name for p in (trained / "out").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    metrics = json.loads((trained / "train.json").read_text())
    assert metrics["global_step"] == 4 and metrics["world_size"] == 1 and metrics["tokens_per_second"] > 0
    assert metrics["eval_loss"] == evals[-1]["eval_loss"]
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert losses[-1] < losses[0]
    # Pinned: a change to data rendering, labels or the loss shows up here first.
    assert losses[-1] == pytest.approx(10.7756, abs=2e-3)
    eval_rows = (trained / "live" / "plots" / "metrics" / "eval" / "loss.tsv").read_text().splitlines()
    train_rows = (trained / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    # Both curves at the trainer's own steps: an evaluation at the end of each epoch (steps 2 and 4).
    assert [row.split("\t")[0] for row in eval_rows[1:]] == ["2", "4"]
    assert [row.split("\t")[0] for row in train_rows[1:5]] == ["1", "2", "3", "4"]


def test_select_then_merge_equals_the_adapter_on_the_base(trained, tiny_model_dir, monkeypatch):
    from peft import PeftModel

    monkeypatch.chdir(trained)
    monkeypatch.setattr("sys.argv", ["select", "--train", "out", "--out", "select.json"])
    select.main()
    choice = json.loads((trained / "select.json").read_text())
    assert choice["eval_loss"] == min(c["eval_loss"] for c in choice["candidates"])

    monkeypatch.setattr("sys.argv", ["merge", "--base", str(tiny_model_dir), "--select", "select.json",
                                     "--data", "data", "--out", "merged", "--metrics", "merge.json"])
    merge.main()
    parity = json.loads((trained / "merge.json").read_text())
    # An fp32 merge is faithful: the same greedy tokens, next-token distributions equal to rounding.
    assert parity["parity_prompts"] == 4 and parity["greedy_agreement"] == 1.0 and parity["mean_kl"] < 1e-6
    merged, tokenizer = load_folder(trained / "merged")
    base, _ = load_folder(tiny_model_dir)
    adapted = PeftModel.from_pretrained(base, choice["checkpoint"])
    ids = tokenizer("SELECT name FROM t WHERE", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapted(ids).logits, atol=1e-4)
    assert merged.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert (trained / "merged" / "chat_template.jinja").is_file()


def test_gpu_only_settings_fall_back_on_a_cpu_with_one_line_each(capsys):
    sft = train.without_gpu_only_settings({"use_liger_kernel": True, "learning_rate": 1e-3}, has_cuda=False)
    assert sft == {"use_liger_kernel": False, "learning_rate": 1e-3, "bf16": False, "fp16": False}
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["[train] no CUDA GPU: train.bf16 -> False (see README, 'GPU settings')",
                     "[train] no CUDA GPU: train.use_liger_kernel -> False (see README, 'GPU settings')"]
    assert train.without_gpu_only_settings({"bf16": True}, has_cuda=True) == {"bf16": True}


def test_plain_loss_on_a_cpu_equals_trl_fused_loss(tiny_model_dir, tmp_path):
    from trl import SFTConfig

    data = train.prompt_completion(prepared(tmp_path / "data", 4, 1) / "train.jsonl")
    losses = []
    for fused in (True, False):
        model, tokenizer = load_folder(tiny_model_dir)
        trainer = train.trainer_class(fused)(
            model=model, processing_class=tokenizer, train_dataset=data,
            args=SFTConfig(output_dir=str(tmp_path / "o"), report_to="none", max_length=512, bf16=False))
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        num_items = (batch["labels"][:, 1:] != -100).sum()
        with torch.no_grad():
            losses.append(trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=num_items).item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert losses[0] > 1.0  # a random model: the loss is real, not zero


def test_fused_lm_head_is_on_a_gpu_only_unless_named():
    p = train.TrainParams()
    assert train.uses_fused_lm_head(p, has_cuda=True) and not train.uses_fused_lm_head(p, has_cuda=False)
    assert train.uses_fused_lm_head(train.TrainParams(fused_lm_head=True), has_cuda=False)


def test_qlora_really_loads_the_base_in_4bit(tiny_model_dir):
    import bitsandbytes as bnb

    kwargs = train.model_load_kwargs(train.TrainParams(method="qlora"), has_cuda=False)
    model, _ = load_folder(tiny_model_dir, **kwargs)
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 2 * 7  # every attention and MLP projection of both layers
    assert quantized[0].weight.quant_state.quant_type == "nf4"
    full, _ = load_folder(tiny_model_dir, **train.model_load_kwargs(train.TrainParams(method="lora"), has_cuda=False))
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in full.modules())


def test_flash_attention_falls_back_to_sdpa_without_a_gpu(capsys):
    kwargs = train.model_load_kwargs(train.TrainParams(attn_implementation="flash_attention_2"), has_cuda=False)
    assert kwargs == {"attn_implementation": "sdpa"}
    assert "flash_attention_2 -> sdpa" in capsys.readouterr().out


def test_dora_adds_magnitude_vectors(tiny_model_dir):
    from peft import get_peft_model

    model, _ = load_folder(tiny_model_dir)
    dora = get_peft_model(model, train.peft_config(train.TrainParams(use_dora=True, lora_r=4)))
    assert any("lora_magnitude_vector" in name for name, _ in dora.named_parameters())
    assert train.peft_config(train.TrainParams(method="full")) is None


def test_merge_parity_failure_keeps_the_old_folder(trained, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(trained)
    (trained / "select.json").write_text(json.dumps({"checkpoint": "out/checkpoint-2"}))
    (trained / "params.yaml").write_text(PARAMS.replace("merge:\n", "merge:\n  max_mean_kl: -1.0\n"))
    (trained / "merged-old").mkdir(exist_ok=True)
    (trained / "merged-old" / "marker").write_text("old")
    monkeypatch.setattr("sys.argv", ["merge", "--base", str(tiny_model_dir), "--select", "select.json",
                                     "--data", "data", "--out", "merged-old", "--metrics", "merge-failed.json"])
    with pytest.raises(UserError, match="merge parity check failed: mean KL .* > merge.max_mean_kl -1.0"):
        merge.main()
    assert (trained / "merged-old" / "marker").read_text() == "old"
    assert not (trained / ".merged-old.tmp").exists()


def test_stop_tokens_include_the_chat_templates_end_of_turn(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.convert_ids_to_tokens(merge.end_of_turn_id(tokenizer)) == "<|im_end|>"
    # A Gemma-style template closes turns with a token that is not the tokenizer's eos.
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                               "<|endoftext|>\n{% endfor %}")
    eot = merge.end_of_turn_id(tokenizer)
    assert tokenizer.convert_ids_to_tokens(eot) == "<|endoftext|>" and eot != tokenizer.eos_token_id
    model, _ = load_folder(tiny_model_dir)
    assert merge.stop_tokens(model, tokenizer)[-1] == eot


def test_select_by_a_task_figure_generates_on_validation_records(trained, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(trained)
    (trained / "data" / "task.json").write_text(json.dumps({"metric": "sql_execution",
                                                            "references": ["sql_context"]}))
    (trained / "params.yaml").write_text(PARAMS.replace("  metric: eval_loss\n",
                                                        "  metric: execution_accuracy\n  samples: 2\n"
                                                        "  max_new_tokens: 4\n"))
    monkeypatch.setattr("sys.argv", ["select", "--train", "out", "--base", str(tiny_model_dir), "--data", "data",
                                     "--out", "select-task.json"])
    select.main()
    choice = json.loads((trained / "select-task.json").read_text())
    assert [c["select_samples"] for c in choice["candidates"]] == [2, 2]
    assert all("execution_accuracy" in c and "eval_loss" in c for c in choice["candidates"])
    # A random model's replies hold no SQL: both score 0, and the tie goes to the earlier checkpoint.
    assert choice["execution_accuracy"] == 0.0 and choice["step"] == 2

    (trained / "params.yaml").write_text(PARAMS.replace("  metric: eval_loss\n", "  metric: bleu\n  samples: 1\n"
                                                        "  max_new_tokens: 2\n"))
    with pytest.raises(UserError, match="select.metric 'bleu' is neither a trainer log key nor a figure"):
        select.main()
