"""Loss masks: exactly the tokens of every assistant turn carry loss (end of turn included), on the
embedded model's ChatML template and on a Gemma-style one; one trained turn is trl's own masking."""

import pytest
from conftest import prepared, training_split

from sft import tokens
from sft.params import UserError

# Gemma 3's template in short: bos, the system text folded into the first user turn, the
# assistant called `model`, turns between <start_of_turn> and <end_of_turn>.
GEMMA_STYLE = (
    "{{ bos_token }}{% set first = 0 %}{% set system = '' %}"
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] + '\n\n' %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}"
    "{% for m in loop_messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "<start_of_turn>{{ role }}\n{{ system if loop.first else '' }}{{ m['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")

CHAT = [{"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"},
        {"role": "user", "content": "And of Italy?"}, {"role": "assistant", "content": "Rome"},
        {"role": "user", "content": "Spain?"}, {"role": "assistant", "content": "Madrid"}]


def row(turns, where="chat.jsonl:4"):
    return {"id": 1, "_where": where, "prompt": turns[:-1], "completion": turns[-1:]}


def spans(tokenizer, t: tokens.Tokenized) -> tuple[list[str], list[str]]:
    """The decoded runs of trained and of untrained tokens, in order."""
    runs = tokens.runs(t)
    return ([tokenizer.decode(ids) for trained, ids in runs if trained],
            [tokenizer.decode(ids) for trained, ids in runs if not trained])


@pytest.fixture
def chatml(tokenizer_dir):
    return tokens.fast_tokenizer(tokenizer_dir)


@pytest.fixture
def gemma_style(tokenizer_dir):
    tokenizer = tokens.fast_tokenizer(tokenizer_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    tokenizer.chat_template = GEMMA_STYLE
    return tokenizer


@pytest.mark.parametrize("template, end_of_turn", [("chatml", "<|im_end|>\n"), ("gemma_style", "<end_of_turn>\n")])
def test_every_assistant_turn_and_nothing_else_carries_loss(template, end_of_turn, request):
    tokenizer = request.getfixturevalue(template)
    [t] = tokens.tokenized(tokenizer, [row(CHAT)], "all_assistant")
    trained, untrained = spans(tokenizer, t)
    assert trained == ["Paris" + end_of_turn, "Rome" + end_of_turn, "Madrid" + end_of_turn]
    untrained_text = "".join(untrained)
    for turn in CHAT:
        if turn["role"] != "assistant":
            assert turn["content"] in untrained_text
    # The tokens are the whole conversation as the template renders it, nothing added or lost.
    assert t.input_ids == tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]


@pytest.mark.parametrize("template", ["chatml", "gemma_style"])
def test_last_trains_only_the_final_answer(template, request):
    tokenizer = request.getfixturevalue(template)
    [every] = tokens.tokenized(tokenizer, [row(CHAT)], "all_assistant")
    [last] = tokens.tokenized(tokenizer, [row(CHAT)], "last")
    assert last.input_ids == every.input_ids
    trained, _ = spans(tokenizer, last)
    assert len(trained) == 1 and trained[0].startswith("Madrid")
    assert 0 < sum(last.assistant_masks) < sum(every.assistant_masks)


def test_tool_turns_are_kept_and_never_trained(chatml):
    turns = [{"role": "user", "content": "What is 6 x 7?"}, {"role": "assistant", "content": "calc(6*7)"},
             {"role": "tool", "content": "42"}, {"role": "assistant", "content": "It is 42."}]
    [t] = tokens.tokenized(chatml, [row(turns)], "all_assistant")
    trained, untrained = spans(chatml, t)
    assert trained == ["calc(6*7)<|im_end|>\n", "It is 42.<|im_end|>\n"]
    assert "<|im_start|>tool\n42<|im_end|>" in "".join(untrained)


def test_one_trained_turn_is_exactly_trls_prompt_completion_masking(tiny_model_dir, tmp_path):
    """The train stage hands SFTTrainer token ids and masks; for single-turn records (and for
    `last`) they must be what trl builds itself from the prompt and completion."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from sft.files import read_jsonl
    from sft.models import load_folder

    path = prepared(tmp_path / "data", 6, 1) / "train.jsonl"
    rows = read_jsonl(path)
    multi = {"prompt": CHAT[:-1], "completion": CHAT[-1:]}  # a multi-turn record under `last`
    model, tokenizer = load_folder(tiny_model_dir)
    args = SFTConfig(output_dir=str(tmp_path / "o"), report_to="none", max_length=512, bf16=False)
    trl_own = SFTTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=Dataset.from_list(
        [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows] + [multi])).train_dataset
    ours = SFTTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=Dataset.from_list(
        [{"input_ids": t.input_ids, "assistant_masks": t.assistant_masks}
         for t in tokens.tokenized(tokenizer, [*rows, {"id": "m", **multi}], "last")])).train_dataset
    assert ours["input_ids"] == trl_own["input_ids"]
    assert ours["labels"] == trl_own["labels"]
    assert training_split(path, tiny_model_dir)["input_ids"] == trl_own["input_ids"][:-1]


def test_a_template_that_rewrites_earlier_turns_is_an_error_naming_the_record(chatml):
    # Like templates that drop the reasoning of earlier assistant turns once the conversation goes on.
    chatml.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'assistant' and not loop.last %}{{ m['content'].split('</think>')[-1] }}"
        "{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    turns = [{"role": "user", "content": "a?"}, {"role": "assistant", "content": "<think>hmm</think>A"},
             {"role": "user", "content": "b?"}, {"role": "assistant", "content": "<think>hm</think>B"}]
    with pytest.raises(UserError, match=r"chat.jsonl:4: the chat template renders earlier turns differently.*"
                                        r"prepare.train_on: last"):
        tokens.tokenized(chatml, [row(turns)], "all_assistant")
    [t] = tokens.tokenized(chatml, [row(turns)], "last")  # the way out the error names
    assert spans(chatml, t)[0] == ["<think>hm</think>B<|im_end|>\n"]


def test_the_audit_marks_every_trained_span(chatml):
    r = row(CHAT)
    tokenized = tokens.tokenized(chatml, [r], "all_assistant")
    audit = tokens.report(chatml, [r], tokenized, {"train": tokens.token_counts(tokenized)}, 1)
    assert audit.split("```")[1].count("⟦") == 3 and "⟦Paris<|im_end|>\n⟧«<|im_start|>user\nAnd of Italy?" in audit


@pytest.mark.parametrize("template", ["chatml", "gemma_style"])
def test_offsets_shortcut_equals_encoding_every_cut(template, request):
    """Where a token crosses a turn's boundary (an answer opening with spaces or new lines merges
    with the header's new line), the one-encoding shortcut must still mask what trl's prefix rule does."""
    tokenizer = request.getfixturevalue(template)
    rows = [row([{"role": "user", "content": "q"}, {"role": "assistant", "content": answer},
                 {"role": "user", "content": "again"}, {"role": "assistant", "content": answer + " 2"}])
            for answer in ("plain", " space", "\nnew line", "\n\n  both", "trailing \n")]
    full, cuts = tokens.cut_texts(tokenizer, rows, "all_assistant")
    fast = tokens.by_offsets(tokenizer, full, cuts)
    assert None not in fast and fast == tokens.by_prefixes(tokenizer, rows, full, cuts)


def test_the_trainer_batch_carries_loss_on_every_answer(tiny_model_dir, tmp_path):
    """Through SFTTrainer's own preparation and collator, as the train stage runs it."""
    from trl import SFTConfig, SFTTrainer

    from sft.files import write_jsonl
    from sft.models import load_folder

    write_jsonl(tmp_path / "train.jsonl", [{"id": 1, **row(CHAT)}])
    model, tokenizer = load_folder(tiny_model_dir)
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=training_split(
        tmp_path / "train.jsonl", tiny_model_dir), args=SFTConfig(output_dir=str(tmp_path / "o"), report_to="none",
                                                                  max_length=512, bf16=False))
    batch = trainer.data_collator([trainer.train_dataset[0]])
    t = tokens.Tokenized(batch["input_ids"][0].tolist(), (batch["labels"][0] != -100).int().tolist())
    assert spans(tokenizer, t)[0] == ["Paris<|im_end|>\n", "Rome<|im_end|>\n", "Madrid<|im_end|>\n"]
