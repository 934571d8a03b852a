"""merge: the selected checkpoint folded into the base equals the adapter on the base; a parity
failure keeps the old folder; generation stops at the chat template's end of turn."""

import json

import pytest
import torch
from conftest import TRAINED_PARAMS, stage_main

from sft import checkpoints, stops
from sft.models import load_folder
from sft.params import UserError
from sft.parity import parity

LORA = {"adapter": {"r": 4}, "quantization": None}  # what train records of a LoRA run, as trained_model reads it


def test_select_then_merge_equals_the_adapter_on_the_base(trained_copy, tiny_model_dir, monkeypatch):
    from peft import PeftModel

    trained = trained_copy
    monkeypatch.chdir(trained)
    monkeypatch.setattr("sys.argv", ["select", "--train", "out", "--out", "select.json"])
    stage_main("select")()
    choice = json.loads((trained / "select.json").read_text())
    assert choice["eval_loss"] == min(c["eval_loss"] for c in choice["candidates"])

    monkeypatch.setattr("sys.argv", ["merge", "--base", str(tiny_model_dir), "--select", "select.json",
                                     "--data", "data", "--out", "merged", "--metrics", "merge.json"])
    stage_main("merge")()
    parity = json.loads((trained / "merge.json").read_text())
    # An fp32 merge is faithful: next-token distributions equal to rounding, the same choice wherever
    # the trained model makes a clear one (the tiny model rarely does: the logits below check all).
    assert parity["parity_prompts"] == 4 and parity["positions"] > 0 and parity["mean_kl"] < 1e-6
    assert parity["greedy_agreement"] in (None, 1.0) and parity["parity_reference"] == "the adapter on the base at float32"
    merged, tokenizer = load_folder(trained / "merged")
    base, _ = load_folder(tiny_model_dir)
    adapted = PeftModel.from_pretrained(base, choice["checkpoint"])
    ids = tokenizer("SELECT name FROM t WHERE", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapted(ids).logits, atol=1e-4)
    assert merged.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert (trained / "merged" / "chat_template.jinja").is_file()


def test_merge_parity_failure_keeps_the_old_folder(trained_copy, tiny_model_dir, monkeypatch):
    trained = trained_copy
    monkeypatch.chdir(trained)
    (trained / "select.json").write_text(json.dumps({"checkpoint": "out/checkpoint-2"}))
    (trained / "params.yaml").write_text(TRAINED_PARAMS)
    (trained / "merged-old").mkdir(exist_ok=True)
    (trained / "merged-old" / "marker").write_text("old")
    # A NaN KL (a merge into overflowing weights) fails the check: NaN > threshold would not.
    monkeypatch.setattr("sft.parity.parity", lambda *a: {**parity(*a), "mean_kl": float("nan")})
    monkeypatch.setattr("sys.argv", ["merge", "--base", str(tiny_model_dir), "--select", "select.json",
                                     "--data", "data", "--out", "merged-old", "--metrics", "merge-failed.json"])
    with pytest.raises(UserError, match="merge parity check failed: mean KL nan > merge.max_mean_kl 0.01"):
        stage_main("merge")()
    assert (trained / "merged-old" / "marker").read_text() == "old"
    assert not (trained / ".merged-old.tmp").exists()
    assert not (trained / "merge-failed.json").exists(), "figures are written only for a merged folder that is kept"


def test_stop_tokens_include_the_chat_templates_end_of_turn(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.convert_ids_to_tokens(stops.end_of_turn_id(tokenizer)) == "<|im_end|>"
    # A Gemma-style template closes turns with a token that is not the tokenizer's eos.
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                               "<|endoftext|>\n{% endfor %}")
    eot = stops.end_of_turn_id(tokenizer)
    assert tokenizer.convert_ids_to_tokens(eot) == "<|endoftext|>" and eot != tokenizer.eos_token_id
    model, _ = load_folder(tiny_model_dir)
    assert stops.stop_tokens(model, tokenizer)[-1] == eot


def test_parity_counts_agreement_where_the_trained_choice_is_decided():
    """A near-tie flips under any change of number format (bf16, 4-bit): only positions where the
    trained model's choice is clear count toward greedy agreement; KL counts every position."""
    log = torch.log_softmax
    reference = log(torch.tensor([[5.0, 1.0, 0.0], [1.0, 0.99, 0.0], [0.0, 3.0, 0.0]], dtype=torch.float64), -1)
    merged = log(torch.tensor([[5.0, 1.0, 0.0], [0.99, 1.0, 0.0], [3.0, 0.0, 0.0]], dtype=torch.float64), -1)
    figures = parity([([0, 1, 1], reference)], lambda prompt, cont: merged, ids=[[7]])
    # Position 2 is a near-tie (0.01 nats): its flip is not counted; position 3 is a real disagreement.
    assert (figures["decided_positions"], figures["positions"], figures["greedy_agreement"]) == (2, 3, 0.5)
    assert figures["mean_kl"] > 0
    tie = log(torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64), -1)
    assert parity([([0], tie)], lambda prompt, cont: tie, ids=[[7]])["greedy_agreement"] is None  # nothing decided


def test_a_qlora_adapter_merged_into_its_dequantized_4bit_base_keeps_the_trained_function(tiny_model_dir, tmp_path):
    """The adapter learned against dequant(W4). Merged into those weights, the merged model is the
    adapter on the 4-bit base to rounding; merged into the full-precision W (as before), it carries
    the quantization error W - dequant(W4) in every layer and drifts from what was trained."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from sft.models import load_for_inference, load_tokenizer, nf4_config

    # bitsandbytes' 4-bit blocks need layers at least 64 wide: the tiny model's are 16 and 32.
    base = tmp_path / "base"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)).save_pretrained(base)
    load_tokenizer(tiny_model_dir).save_pretrained(base)
    four_bit, tokenizer = load_for_inference(base, quantization_config=nf4_config(False))
    torch.manual_seed(0)
    adapted = get_peft_model(four_bit, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                  init_lora_weights=False))  # B != 0: the adapter changes outputs
    adapted.save_pretrained(tmp_path / "checkpoint")
    ids = tokenizer("SELECT name FROM t WHERE id =", return_tensors="pt").input_ids
    with torch.no_grad():
        trained = torch.log_softmax(adapted(ids).logits.double(), -1)

    def kl_of(model) -> float:
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits.double(), -1)
        return float((trained.exp() * (trained - logp)).sum(-1).mean())

    on_dequantized, _ = checkpoints.adapter_on_dequantized_base(base, tmp_path / "checkpoint", "float32",
                                                                nf4_config(False))
    on_full_precision, _ = checkpoints.trained_model(base, tmp_path / "checkpoint", "float32", LORA)
    kept, drifted = kl_of(checkpoints.merged(on_dequantized)), kl_of(checkpoints.merged(on_full_precision))
    assert kept < 1e-6 and drifted > 100 * kept, (kept, drifted)  # measured: 6e-8 against 7e-5


def test_parity_on_a_gpu_projects_only_the_continuation_and_batches_a_few_prompts(tiny_model_dir):
    """On a GPU the check keeps the logits of the positions it reads (`logits_to_keep`), not every
    prompt position's full-vocabulary row, and generates its reference a few prompts at a time;
    the log-probabilities are those of the full projection."""
    import torch

    from sft import parity as parity_module
    from sft.parity import next_token_logprobs, reference_batch

    model, _ = load_folder(tiny_model_dir)
    prompt, cont = list(range(5, 45)), [7, 8, 9]
    rows = []
    hook = model.lm_head.register_forward_hook(lambda module, inputs, output: rows.append(output.shape[1]))
    full = next_token_logprobs(model, prompt, cont, only_needed=False)
    needed = next_token_logprobs(model, prompt, cont, only_needed=True)
    hook.remove()
    assert rows == [len(prompt) + len(cont), len(cont) + 1]
    assert needed.shape == full.shape == (len(cont), model.config.vocab_size)
    assert torch.allclose(needed, full, atol=1e-5)
    assert reference_batch(model, 8) == 8  # a CPU: every prompt at once, as the committed runs did

    class OnGpu:
        device = torch.device("cuda")

    assert reference_batch(OnGpu(), 8) == parity_module.GPU_BATCH < 8 and reference_batch(OnGpu(), 1) == 1
