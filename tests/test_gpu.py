"""On a CUDA GPU only (skipped elsewhere; CI has none): the presets' GPU settings through the
project's own training code, on a tiny Gemma 3 of the real architecture (rehearsal/gemma.py) and
prepared records. bf16 weights (trl's model_init_kwargs) and bf16 mixed precision, liger-kernel's
kernels, trl's chunked LM-head loss; then the merge's parity check and batched generation on the
GPU. On a GPU machine: `pytest -m gpu tests/test_gpu.py` (needs trl, datasets, peft; liger-kernel
for its half)."""

import importlib.util
import json
import math

import pytest
import torch
import yaml
from conftest import ROOT, prepared

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def gemma_and_data(tmp_path_factory):
    from rehearsal import gemma

    work = tmp_path_factory.mktemp("gpu")
    data = prepared(work / "data", n_train=48, n_val=8)
    texts = [m["content"] for split in ("train", "validation")
             for line in (data / f"{split}.jsonl").read_text().splitlines()
             for m in json.loads(line)["prompt"] + json.loads(line)["completion"]]
    model = gemma.build(work / "model", "AutoModelForCausalLM", texts)
    return model, prepared(work / "data", n_train=48, n_val=8, model_dir=model)  # tokens by the model's tokenizer


def preset_train(method: str, liger: bool) -> dict:
    """The text-to-sql preset's train section, at the tiny model's scale."""
    train = yaml.safe_load((ROOT / "presets" / "text-to-sql.yaml").read_text())["train"]
    return {**train, "method": method, "use_liger_kernel": liger, "epochs": 3, "learning_rate": 1.0e-3,
            "warmup_steps": 0, "per_device_train_batch_size": 8, "logging_steps": 1,
            "lora_r": 8, "lora_alpha": 16, "report_to": "none"}


def from_liger(module) -> bool:
    forward = module.forward
    function = getattr(forward, "__func__", getattr(forward, "func", forward))  # a bound method, a partial
    return any(getattr(x, "__module__", "").startswith("liger_kernel") for x in (type(module), function))


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("liger", [False, True])
def test_a_preset_trains_in_bf16_on_the_gpu(gemma_and_data, tmp_path, method, liger, capsys):
    from sft import training

    if liger and importlib.util.find_spec("liger_kernel") is None:
        pytest.skip("liger-kernel is not installed")
    model_dir, data = gemma_and_data
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": preset_train(method, liger)}))
    p, sft = training.load_params(str(tmp_path / "params.yaml"))
    config = training.sft_config(p, sft, str(tmp_path / "out"), has_cuda=True)
    trainer, _ = training.make_trainer(p, config, str(model_dir), data, True)
    said = capsys.readouterr().out
    assert "->" not in said, said  # no GPU setting fell back
    weights = trainer.model.get_base_model() if method == "lora" else trainer.model
    assert weights.model.embed_tokens.weight.dtype == torch.bfloat16  # model_init_kwargs: {dtype: bfloat16}
    assert config.bf16 and type(trainer).__name__ == "SFTTrainer"  # trl's own loss: its chunked LM head on a GPU
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    assert losses and all(math.isfinite(x) for x in losses + evals)
    assert losses[-1] < losses[0] and evals[-1] < evals[0], (losses, evals)
    if liger:  # liger's Gemma 3 kernels really replaced the model's own (classes, or forwards patched in place)
        assert any(from_liger(m) for m in trainer.model.modules())
    assert next(trainer.model.parameters()).device.type == "cuda"


def test_a_lora_merge_keeps_the_trained_model_and_generates_on_the_gpu(gemma_and_data, tmp_path):
    from peft import LoraConfig, get_peft_model

    from sft.checkpoints import merged, trained_model
    from sft.generation import generate, prompt_ids
    from sft.models import load_for_inference
    from sft.parity import next_token_logprobs, parity, reference

    model_dir, data = gemma_and_data
    base, tokenizer = load_for_inference(model_dir, dtype="bfloat16")
    assert base.device.type == "cuda"
    torch.manual_seed(0)
    get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
                   ).save_pretrained(tmp_path / "adapter")
    adapted, tokenizer = trained_model(model_dir, tmp_path / "adapter", "bfloat16", {"adapter": {"r": 8}, "quantization": None})
    prompts = [json.loads(line)["prompt"] for line in (data / "validation.jsonl").read_text().splitlines()]
    ids = prompt_ids(tokenizer, prompts)
    expected = reference(adapted, tokenizer, ids, 16)
    whole = merged(adapted)
    figures = parity(expected, lambda prompt, cont: next_token_logprobs(whole, prompt, cont), ids)
    assert figures["positions"] > 0 and figures["mean_kl"] < 0.01, figures  # bf16 rounding only
    replies, speed = generate(whole, tokenizer, prompts, 16, 4)
    assert len(replies) == len(prompts) and speed["generated_tokens"] > 0
