"""The export stage's parts: the Ollama Modelfile derived from the chat template, the model card's
header and figures, the offline plot page, and (with llama.cpp installed) a real GGUF of the tiny
model checked against it."""

from __future__ import annotations

import json

import pytest
import yaml

from sft import llamacpp
from sft.card import RunFacts, model_card
from sft.modelfile import go_template, modelfile, rendered, stop_strings, turn_parts
from sft.plots import DVC_PLACEHOLDER, loss_png, offline_template, with_font

CONVERSATIONS = [
    [{"role": "user", "content": "List the tables."}],
    [{"role": "system", "content": "You write SQL."}, {"role": "user", "content": "Count rows in t."},
     {"role": "assistant", "content": "SELECT COUNT(*) FROM t;"}, {"role": "user", "content": "And in u?"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
     {"role": "assistant", "content": "d\n\ne"}, {"role": "user", "content": "{{ braces }}"}],
]


def test_the_modelfile_template_renders_every_conversation_as_the_chat_template(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    parts = turn_parts(tokenizer)
    assert parts is not None
    for conversation in CONVERSATIONS:
        assert rendered(parts, conversation) == tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True)
    # SmolLM2's template writes its default system prompt when there is none: the Go template does too.
    assert "You are a helpful AI assistant named SmolLM" in parts.no_system
    assert go_template(parts) == (
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ else }}" + parts.no_system + "{{ end }}"
        '{{ range .Messages }}{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
        '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}<|im_end|>\n{{ end }}{{ end }}'
        "<|im_start|>assistant\n")


def test_the_modelfile_stops_at_the_end_of_turn_and_names_the_gguf(tiny_model_dir):
    from sft.models import load_folder

    model, tokenizer = load_folder(tiny_model_dir)
    text = modelfile("model-f16.gguf", turn_parts(tokenizer), stop_strings(model, tokenizer))
    lines = text.splitlines()
    assert lines[0] == "FROM ./model-f16.gguf"
    assert 'PARAMETER stop "<|im_end|>"' in lines
    assert text.count('TEMPLATE """') == 1 and text.rstrip().endswith('PARAMETER stop "<|im_end|>"')


def test_a_template_that_folds_the_system_prompt_gets_no_modelfile_template(tmp_path):
    """Gemma 3 writes the system message inside the first user turn: no per-role wrappers, so no
    TEMPLATE (Ollama then uses the GGUF's own chat template); the stops are still derived."""
    from rehearsal import gemma
    from sft.models import load_folder

    folder = gemma.build(tmp_path / "gemma", "AutoModelForCausalLM", ["select 1 from t", "hello there"] * 20,
                         vocab_size=400)
    model, tokenizer = load_folder(folder)
    assert turn_parts(tokenizer) is None
    text = modelfile("model-f16.gguf", None, stop_strings(model, tokenizer))
    assert "TEMPLATE" not in text
    assert 'PARAMETER stop "<eos>"' in text and 'PARAMETER stop "<end_of_turn>"' in text


TRAINED = {"method": "lora", "max_length": 512, "global_batch": 8,
           "settings": {"epochs": 2, "learning_rate": 0.001, "method": "lora", "early_stopping_patience": None,
                        "model_init_kwargs": {"dtype": "float32"}}}


def facts(**changes) -> RunFacts:
    base = dict(
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct", license="apache-2.0",
        datasets=[{"dataset": "data/raw/sql", "subset": None, "revision": None}], trained=TRAINED,
        compare={"metric": "execution_accuracy", "baseline": 0.05, "finetuned": 0.84, "difference": 0.79,
                 "difference_ci_low": 0.73, "difference_ci_high": 0.85,
                 "against_fewshot": {"fewshot": 0.3, "difference": 0.54, "difference_ci_low": 0.46,
                                     "difference_ci_high": 0.61}},
        figures={"fewshot": {"execution_accuracy": 0.3, "execution_accuracy_ci_low": 0.24,
                             "execution_accuracy_ci_high": 0.37},
                 "finetuned": {"execution_accuracy": 0.84, "execution_accuracy_ci_low": 0.783,
                               "execution_accuracy_ci_high": 0.884, "samples": 200},
                 "baseline": {"execution_accuracy": 0.05, "execution_accuracy_ci_low": 0.027,
                              "execution_accuracy_ci_high": 0.09, "samples": 200}},
        shots=3, forgetting={"base_loss": 3.505, "finetuned_loss": 3.5412, "difference": 0.0362,
                             "difference_ci_low": 0.0301, "difference_ci_high": 0.0425, "documents": 200},
        forgetting_dataset="data/general/python-reference.jsonl",
        prompt_example="<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
        stops=["<|im_end|>"], form="gguf",
        checked={"gguf": "model-f16.gguf", "parity_prompts": 8, "same_prompt_token_ids": 8, "greedy_agreement": 1.0,
                 "decided_positions": 118, "replies_ending_at_end_of_turn": 8, "gguf_stopped": 8})
    return RunFacts(**{**base, **changes})


def test_the_model_card_header_and_figures_come_from_the_run():
    from huggingface_hub import ModelCard

    text = str(model_card(facts(), "sql-model"))
    assert text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and header["license"] == "apache-2.0"
    assert header["datasets"] == ["data/raw/sql"] and header["pipeline_tag"] == "text-generation"
    assert {"sft", "lora"} <= set(header["tags"])
    [result] = header["model-index"][0]["results"]
    assert result["metrics"][0] == {"type": "execution_accuracy", "value": 0.84, "name": "execution_accuracy"}
    assert result["dataset"]["split"] == "test"
    assert ModelCard(text).data.to_dict()["license"] == "apache-2.0"  # huggingface_hub reads it back
    assert "| baseline (HuggingFaceTB/SmolLM2-135M-Instruct) | 0.050 [0.027, 0.090] | +0.790 [+0.730, +0.850] |" in text
    assert "| baseline, 3-shot (train examples before each prompt) | 0.300 [0.240, 0.370] | +0.540 [+0.460, +0.610] |" in text
    assert "| fine-tuned | 0.840 [0.783, 0.884] | |" in text
    assert ("general-text loss (mean per-token cross-entropy on 200 documents of `data/general/python-reference.jsonl`, "
            "paired by document) 3.505 -> 3.541 nats a token, +0.0362 [+0.0301, +0.0425]") in " ".join(text.split())
    for how in ("pipeline(", "vllm serve", "llama-cli -m models/gguf/model-f16.gguf", "ollama create sql-model"):
        assert how in text
    assert "| `learning_rate` | `0.001` |" in text and "`<|im_end|>`" in text
    assert "| `max_length` | `512` |" in text and "| `global_batch` | `8` |" in text
    assert "early_stopping_patience" not in text and "model_init_kwargs" not in text  # unset, and not a scalar
    assert "The GGUF was checked against the merged model on 8 validation prompts" in text
    checked = {**facts().checked, "gguf": "model-q4_k_m.gguf",
               "test": {"execution_accuracy": 0.8, "execution_accuracy_ci_low": 0.74, "execution_accuracy_ci_high": 0.85}}
    quantized = str(model_card(facts(checked=checked), "m"))
    assert "| model-q4_k_m.gguf (llama.cpp) | 0.800 [0.740, 0.850] | |" in quantized


def test_the_merged_models_card_is_the_same_card_without_the_gguf():
    merged = {"parity_reference": "the adapter on the base at float32", "parity_prompts": 8,
              "greedy_agreement": None, "decided_positions": 0, "mean_kl": 6.3e-13}
    text = str(model_card(facts(form="merged", checked=merged), "sql-model"))
    gguf = str(model_card(facts(), "sql-model"))
    assert "gguf" not in text.lower().replace("models/gguf", "")  # no tag, no file, no llama.cpp or Ollama
    assert "greedy agreement none decided on 0 decided positions, mean KL 6.3e-13" in text
    assert text.split("## Training")[1].split("## Use")[0] == gguf.split("## Training")[1].split("## Use")[0]


def test_a_baseline_of_a_new_kind_is_a_row_by_its_name_from_compare_alone():
    """compare's list names the baselines: one more --against file gives the card one more row, in
    compare's order, named as in that list; no code names it."""
    compare = {**facts().compare, "against_retrieval": {"retrieval": 0.6, "difference": 0.24,
                                                        "difference_ci_low": 0.2, "difference_ci_high": 0.3}}
    figures = {**facts().figures, "retrieval": {"execution_accuracy": 0.6}}
    text = str(model_card(facts(compare=compare, figures=figures), "m"))
    rows = [line for line in text.splitlines() if line.startswith("| ") and "[" in line]
    assert [r.split(" |")[0] for r in rows] == ["| baseline (HuggingFaceTB/SmolLM2-135M-Instruct)",
                                                "| baseline, 3-shot (train examples before each prompt)",
                                                "| retrieval", "| fine-tuned"]
    assert "| retrieval | 0.600 | +0.240 [+0.200, +0.300] |" in text


def test_other_models_are_rows_of_the_card_and_a_hostile_folder_name_cannot_break_the_table():
    against = {"finetuned": 0.84, "difference": 0.42, "difference_ci_low": 0.35, "difference_ci_high": 0.49}
    others = [{"name": "gemma-270m", "model": "google/gemma-3-270m-it", "revision": "a" * 40,
               "execution_accuracy": 0.42, "execution_accuracy_ci_low": 0.35, "execution_accuracy_ci_high": 0.49,
               "against_finetuned": against},
              {"name": "earlier", "model": "models/a|b`c\n| x |", "revision": None, "execution_accuracy": 0.5,
               "execution_accuracy_ci_low": 0.4, "execution_accuracy_ci_high": 0.6, "against_finetuned": against}]
    text = str(model_card(facts(others=others), "m"))
    table = ("| model |" + text.split("| model |", 1)[1].split("\n\n", 1)[0]).splitlines()
    assert table[4] == "| gemma-270m (`google/gemma-3-270m-it` at `aaaaaaaaaaaa`) | 0.420 [0.350, 0.490] | +0.420 [+0.350, +0.490] |"
    assert table[5] == "| earlier (`models/a/b'c / x /`) | 0.500 [0.400, 0.600] | +0.420 [+0.350, +0.490] |"
    assert table[6].startswith("| fine-tuned |") and all(row.count("|") == 4 for row in table)


def test_the_plot_page_loads_nothing_from_the_network_and_the_loss_draws(tmp_path):
    page = offline_template()
    assert DVC_PLACEHOLDER in page and "{scripts}" not in page  # dvc's CDN scripts have nowhere to go
    assert "<script src" not in page and "cdn.jsdelivr" not in page
    assert "vegaEmbed" in page and len(page) > 500_000  # vega, vega-lite and vega-embed inlined
    for split, rows in (("train", "step\tloss\n1\t2.5\n2\t2.0\n"), ("eval", "step\tloss\n2\t2.2\n")):
        (tmp_path / "live" / split).mkdir(parents=True)
        (tmp_path / "live" / split / "loss.tsv").write_text(rows)
    assert with_font({"mark": "line"})["config"]["font"] == "Roboto"  # not the machine's own fonts
    assert loss_png(tmp_path / "live", tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not loss_png(tmp_path / "nothing", tmp_path / "none.png") and not (tmp_path / "none.png").exists()


needs_llamacpp = pytest.mark.skipif(llamacpp.missing() is not None, reason="llama.cpp is not installed (make llamacpp)")


@pytest.fixture(scope="module")
def decided_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with its final norm scaled up: a random model's next-token distribution is
    nearly flat (no position is decided), a sharper one gives the parity check something to count."""
    import torch

    from sft.models import load_folder, save_tokenizer

    model, tokenizer = load_folder(tiny_model_dir)
    with torch.no_grad():
        model.model.norm.weight.mul_(40)
    out = tmp_path_factory.mktemp("decided")
    model.save_pretrained(out)
    save_tokenizer(tokenizer, out)
    return out


@needs_llamacpp
@pytest.mark.parametrize("outtype", ["f16", "q8_0", "q4_k_m"])
def test_a_gguf_keeps_the_token_ids_greedy_choices_and_stop_of_its_model(decided_model_dir, tmp_path, outtype):
    from functools import partial

    import llama_cpp

    from sft.generation import prompt_ids, render_prompts
    from sft.models import load_folder
    from sft.parity import parity, reference
    from sft.stops import stop_tokens

    gguf = llamacpp.convert(decided_model_dir, tmp_path / llamacpp.gguf_name(outtype), outtype)
    assert gguf.read_bytes()[:4] == b"GGUF" and not list(tmp_path.glob("*.f16.gguf"))  # the f16 step is gone
    model, tokenizer = load_folder(decided_model_dir)
    prompts = [c[:-1] if c[-1]["role"] == "assistant" else c for c in CONVERSATIONS]
    ids = prompt_ids(tokenizer, prompts)
    llm = llamacpp.load(gguf, n_ctx=512)
    for text, expected in zip(render_prompts(tokenizer, prompts), ids, strict=True):
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == expected
    figures = parity(reference(model, tokenizer, ids, 16), partial(llamacpp.next_token_logprobs, llm), ids)
    print(outtype, gguf.stat().st_size, figures)
    assert figures["decided_positions"] >= 20, figures
    if outtype == "q4_k_m":  # 4 bits lose something; the stage reports how much
        assert figures["greedy_agreement"] >= 0.5 and figures["mean_kl"] > 1e-4, figures
    else:
        assert figures["greedy_agreement"] >= 0.9 and figures["mean_kl"] < 0.05, figures
    assert llama_cpp.llama_vocab_is_eog(llm._model.vocab, stop_tokens(model, tokenizer)[-1])  # stops at <|im_end|>


def test_a_gguf_is_named_by_the_run_not_by_its_folder(tiny_model_dir, tmp_path):
    pytest.importorskip("gguf")
    if llamacpp.converter() is None:
        pytest.skip("llama.cpp's converter is not installed (make llamacpp)")
    import shutil

    from gguf import GGUFReader

    other = shutil.copytree(tiny_model_dir, tmp_path / "another-folder")
    hashes = set()
    for folder in (tiny_model_dir, other):
        gguf = llamacpp.convert(folder, tmp_path / f"{folder.name}.gguf", "f16", "sft-model")
        assert GGUFReader(gguf).fields["general.name"].contents() == "sft-model"
        hashes.add(gguf.read_bytes())
    assert len(hashes) == 1  # same bytes from another folder: reproducible


@needs_llamacpp
def test_the_llamacpp_backend_answers_as_transformers_does(tiny_model_dir):
    """evaluate.backend: llamacpp on the tiny model (float32, so an f32 GGUF): the same greedy replies."""
    from sft.generation import Settings, replies

    prompts = [c[:-1] if c[-1]["role"] == "assistant" else c for c in CONVERSATIONS] * 2
    settings = Settings(max_new_tokens=8, batch_size=4)
    answered, speed = replies(str(tiny_model_dir), prompts, settings, "llamacpp")
    expected, _ = replies(str(tiny_model_dir), prompts, settings, "transformers")
    assert speed["generated_tokens"] > 0
    assert sum(a == b for a, b in zip(answered, expected, strict=True)) >= len(prompts) - 1, (answered, expected)


def test_the_llamacpp_backend_falls_back_with_one_line_without_llama_cpp(monkeypatch, capsys):
    from sft import device

    monkeypatch.setattr(device, "has_llamacpp", lambda: False)
    assert device.generation_backend("llamacpp") == "transformers"
    assert "evaluate.backend llamacpp -> transformers" in capsys.readouterr().out


@needs_llamacpp
def test_a_quantized_gguf_answers_the_test_split_scored_as_evaluate_scores(tiny_model_dir, tmp_path):
    """What the stage adds for a quantized type: the GGUF's own task figures with an interval."""
    import json
    import shutil

    from conftest import ROOT, prepared
    from transformers import AutoTokenizer

    from sft.exporting import quantized_figures
    from sft.task import load_task, task_json

    data = prepared(tmp_path / "data", n_train=1, n_val=6)
    shutil.copy(data / "validation.jsonl", data / "test.jsonl")
    (data / "task.json").write_text(json.dumps(task_json(load_task(ROOT / "prompts" / "sql"))))
    gguf = llamacpp.convert(tiny_model_dir, tmp_path / "model-q8_0.gguf", "q8_0")
    llm = llamacpp.load(gguf, n_ctx=1024, all_logits=False)
    figures = quantized_figures(llm, AutoTokenizer.from_pretrained(tiny_model_dir), data, max_new_tokens=8)
    assert figures["samples"] == 6 and 0.0 <= figures["execution_accuracy"] <= 1.0
    assert figures["execution_accuracy_ci_low"] <= figures["execution_accuracy"] <= figures["execution_accuracy_ci_high"]
    assert "tokens_per_second" not in figures  # machine-dependent: kept out of metrics/export.json


def test_a_sentencepiece_tokenizer_travels_with_the_model_and_its_special_tokens_stay_special(tmp_path, monkeypatch,
                                                                                             tiny_model_dir):
    """Gemma's tokenizer.model is what llama.cpp's converter reads; save_pretrained drops it, and
    transformers 5 no longer writes which added tokens are special. base and merge keep both."""
    from rehearsal import gemma
    from sft.models import SENTENCEPIECE_FILE, keep_sentencepiece, load_folder, save_tokenizer, sentencepiece_file

    source = gemma.build(tmp_path / "hub", "AutoModelForCausalLM", ["select 1 from t", "hello there"] * 20)
    assert sentencepiece_file(str(source)) == source / SENTENCEPIECE_FILE
    assert sentencepiece_file(str(tiny_model_dir)) is None  # SmolLM2's byte-level BPE: nothing to keep
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    assert sentencepiece_file("google/gemma-3-270m-it", "0123abc") is None  # offline, not cached: none
    _, tokenizer = load_folder(source)
    saved = tmp_path / "saved"
    saved.mkdir()
    save_tokenizer(tokenizer, saved)
    assert not (saved / SENTENCEPIECE_FILE).exists()  # what save_pretrained leaves
    keep_sentencepiece(saved, tokenizer, sentencepiece_file(str(source)))
    assert (saved / SENTENCEPIECE_FILE).read_bytes() == (source / SENTENCEPIECE_FILE).read_bytes()
    decoder = json.loads((saved / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    assert decoder[str(gemma.END_OF_TURN)]["content"] == "<end_of_turn>" and decoder["105"]["content"] == "<start_of_turn>"
    assert {int(i): d["special"] for i, d in decoder.items()} == {i: t.special for i, t in tokenizer.added_tokens_decoder.items()}
    assert decoder["0"]["special"] and decoder["1"]["special"] and decoder["2"]["special"]  # pad, eos, bos
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(saved)
    text = "<start_of_turn>user\nselect 1<end_of_turn>\n"
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]
    keep_sentencepiece(tmp_path, tokenizer, None)  # a tokenizer without one: nothing written
    assert not (tmp_path / SENTENCEPIECE_FILE).exists() and not (tmp_path / "tokenizer_config.json").exists()


@needs_llamacpp
def test_llama_cpp_reads_the_kept_sentencepiece_model_with_gemmas_turn_tokens_special(tmp_path):
    from llama_cpp import Llama

    from rehearsal import gemma
    from sft.models import keep_sentencepiece, load_folder, save_tokenizer, sentencepiece_file

    source = gemma.build(tmp_path / "hub", "AutoModelForCausalLM", ["select 1 from t", "hello there"] * 20)
    model, tokenizer = load_folder(source)
    merged = tmp_path / "merged"
    model.save_pretrained(merged)
    save_tokenizer(tokenizer, merged)
    keep_sentencepiece(merged, tokenizer, sentencepiece_file(str(source)))
    gguf = llamacpp.convert(merged, tmp_path / "m.gguf", "f16")
    llm = Llama(str(gguf), vocab_only=True, verbose=False)
    text = "<bos><start_of_turn>user\nselect 1 from t<end_of_turn>\n<start_of_turn>model\n"
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_the_cards_benchmark_table_judge_lines_and_a_lower_is_better_metric():
    paired = {"sft_reading": {"acc": {"baseline": 0.6083, "finetuned": 0.7333, "items": 120, "difference": 0.125,
                                      "difference_ci_low": 0.0583, "difference_ci_high": 0.2}}}
    settings = {"harness": "lm-evaluation-harness 0.4.13", "apply_chat_template": True, "num_fewshot": 5, "limit": 50,
                "dtype": "float32", "backend": "transformers"}
    runs = {name: {"tasks": {"sft_reading": {"acc": v, "acc_stderr": e}}, "settings": settings}
            for name, v, e in (("baseline", 0.6083, 0.0447), ("finetuned", 0.7333, 0.0405))}
    judges = [{"name": "big", "judge": {"model": "org/judge|x", "revision": "b" * 40}, "mode": "pairwise", "items": 200,
               "judged": 190, "win_rate": 0.71, "win_rate_ci_low": 0.65, "win_rate_ci_high": 0.77, "wins": 120,
               "losses": 40, "ties": 30, "flipped_with_order": 25, "no_verdict": 10},
              {"name": "tiny", "judge": {"folder": "models/base"}, "mode": "pairwise", "items": 4, "judged": 0,
               "win_rate": None, "win_rate_ci_low": None, "win_rate_ci_high": None, "wins": 0, "losses": 0,
               "ties": 0, "flipped_with_order": 0, "no_verdict": 4},
              {"name": "rater", "judge": {"folder": "models/j"}, "mode": "score", "items": 4, "judged": 3,
               "baseline_score": 3.0, "finetuned_score": 7.5, "no_verdict_baseline": 1, "no_verdict_finetuned": 0,
               "difference": 4.5, "difference_ci_low": 3.0, "difference_ci_high": 6.0}]
    compare = {**facts().compare, "benchmarks": paired}
    text = " ".join(str(model_card(facts(compare=compare, benchmarks=runs, judges=judges), "m")).split())
    assert ("Standard benchmarks (lm-evaluation-harness 0.4.13, 5 shots, chat template on, float32, at most 50 items "
            "a task;") in text
    assert "| `sft_reading` | `acc` | 120 | 0.608 ± 0.045 | 0.733 ± 0.041 | +0.125 [+0.058, +0.200] |" in text
    assert ("Judged by big (`org/judge/x`), pairwise with each pair asked in both orders, on 200 test items: the "
            "fine-tuned model wins 0.710 [0.650, 0.770] against the base (ties count half): 120 wins, 40 losses, "
            "30 ties (25 flipped with the order), 10 without a verdict.") in text
    assert "Judged by tiny (`models/base`), pairwise on 4 test items: no pair got a verdict in both orders" in text
    assert "Rated 1-10 by rater (`models/j`) on 4 test items: base 3.00 -> fine-tuned 7.50, +4.50 [+3.00, +6.00]" in text
    bare = str(model_card(facts(), "m"))  # no benchmarks, no judge: no empty paragraphs
    assert "Standard benchmarks" not in bare and "Judged" not in bare and "\n\n\n" not in bare
    lower = {**facts().compare, "metric": "error_rate", "greater_is_better": False}
    figures = {k: {"error_rate": 0.3, **v} for k, v in facts().figures.items()}
    assert "| model | error_rate (lower is better) | fine-tuned minus it |" in str(
        model_card(facts(compare=lower, figures=figures), "m"))
