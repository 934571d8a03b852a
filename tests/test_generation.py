"""Generation's shortcuts give what the plain computation gives: grouped-query attention on a
CPU (transformers' sdpa bit for bit, without its key/value copies), the shared prefix of the
prompts computed once, and rows leaving the batch when their reply is over (each prompt's reply
as if generated on its own)."""

from __future__ import annotations

import pytest
import torch

from sft import attention, fewshot, generation
from sft.generation import batch_inputs, continuations, prompt_ids, shared_prefix
from sft.models import load_folder
from sft.stops import stop_tokens

QUESTIONS = ["How many rows?", "List every name in the table of employees, longest first.", "Sum of x?",
             "Which departments have more than three employees earning above the median salary?", "Max?"]
SYSTEM = {"role": "system", "content": "You translate a question into one SQLite query. Reply with the query only."}


def few_shot_prompts() -> list[list[dict]]:
    shown = [{"prompt": [SYSTEM, {"role": "user", "content": f"Example question {n}?"}],
              "completion": [{"role": "assistant", "content": f"SELECT {n};"}]} for n in range(3)]
    return [fewshot.with_examples([SYSTEM, {"role": "user", "content": q}], shown) for q in QUESTIONS]


def alone(model, tokenizer, ids: list[list[int]], max_new_tokens: int, stops: set[int] | None = None
          ) -> list[list[int]]:
    """Each prompt's greedy continuation, one at a time, no padding, no cache handed in."""
    stops = set(stop_tokens(model, tokenizer)) if stops is None else stops
    out = []
    for row in ids:
        with torch.inference_mode():
            new = model.generate(input_ids=torch.tensor([row]), max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)[0, len(row):].tolist()
        out.append(new[:next((n + 1 for n, t in enumerate(new) if t in stops), len(new))])
    return out


def generate_rows(model, monkeypatch) -> list[int]:
    """The rows of every `model.generate` call from here on."""
    rows, real = [], model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: rows.append(kw["input_ids"].shape[0]) or real(**kw))
    return rows


def padded_batch(tokenizer):
    ids = prompt_ids(tokenizer, few_shot_prompts())
    return batch_inputs(ids, 0, tokenizer.eos_token_id)


def test_grouped_attention_is_sdpa_bit_for_bit_without_copying_keys_and_values(tiny_model_dir, monkeypatch):
    from transformers.integrations import sdpa_attention

    model, tokenizer = load_folder(tiny_model_dir)
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped
    input_ids, mask = padded_batch(tokenizer)
    with torch.inference_mode():
        plain = model(input_ids=input_ids, attention_mask=mask).logits
        copies = []
        real_repeat = sdpa_attention.repeat_kv
        monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda h, n: copies.append(n) or real_repeat(h, n))
        with attention.grouped_query_attention(model):
            assert model.config._attn_implementation == attention.NAME
            grouped = model(input_ids=input_ids, attention_mask=mask).logits
        assert copies == []
        assert model.config._attn_implementation == "sdpa"  # put back
        model(input_ids=input_ids, attention_mask=mask)
        assert copies  # sdpa itself copies: the check above can fail
    assert torch.equal(plain, grouped)


def test_a_half_precision_model_attends_in_float32_on_a_cpu():
    """torch's CPU attention kernel is slower in bf16 than in float32: the grouped attention
    computes a bf16 model's attention in float32 and hands back bf16."""
    from types import SimpleNamespace

    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, heads, 5, 8, generator=generator).bfloat16() for heads in (4, 2, 2))
    mask = torch.ones(5, 5, dtype=torch.bool).tril().expand(2, 1, 5, 5).clone()
    mask[1, :, :, 0] = False  # a padded first position in the second row
    mask[1, :, 0, 0] = True  # which still attends to itself
    out, _ = attention.grouped_sdpa(SimpleNamespace(is_causal=True), query, key, value, mask)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query.float(), key.float().repeat_interleave(2, dim=1), value.float().repeat_interleave(2, dim=1),
        attn_mask=mask).bfloat16().transpose(1, 2)
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected)


def test_grouped_attention_leaves_other_attention_alone(tiny_model_dir):
    model, _ = load_folder(tiny_model_dir, attn_implementation="eager")
    with attention.grouped_query_attention(model):
        assert model.config._attn_implementation == "eager"


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 3]]) == [1, 2]
    assert shared_prefix([[1, 2], [3]]) == []
    assert shared_prefix([[7, 8, 9]]) == [7, 8]
    assert shared_prefix([]) == []


def test_batch_inputs_put_the_padding_between_shared_and_own_tokens():
    input_ids, mask = batch_inputs([[1, 2, 3, 4], [1, 2, 5]], shared=2, pad=0)
    assert input_ids.tolist() == [[1, 2, 3, 4], [1, 2, 0, 5]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 1]]


def test_a_shared_prefix_computed_once_gives_each_prompt_its_own_reply(smollm_dir, monkeypatch):
    # The real embedded model: a tiny random one answers every prompt with the same token.
    model, tokenizer = load_folder(smollm_dir)
    ids = prompt_ids(tokenizer, few_shot_prompts())
    assert len(shared_prefix(ids)) > 40  # the system message and the three examples
    cached = []
    real_cache = generation.prefix_cache
    monkeypatch.setattr(generation, "prefix_cache", lambda m, s: cached.append(real := real_cache(m, s)) or real)
    got = continuations(model, tokenizer, ids, max_new_tokens=12, batch_size=3)
    assert cached and cached[0] is not None  # the shortcut ran
    assert len({tuple(r) for r in got}) > 2  # replies that differ, so a wrong prompt would show
    assert got == alone(model, tokenizer, ids, 12)


@pytest.fixture(scope="module")
def sliding_window_model(tiny_model_dir):
    """Gemma 3's text architecture, tiny and random: a sliding-window layer (4 tokens) and a full one."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from sft.models import load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer(tiny_model_dir)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=4,
                              layer_types=["sliding_attention", "full_attention"], max_position_embeddings=1024,
                              eos_token_id=tokenizer.eos_token_id, attn_implementation="sdpa")
    return Gemma3ForCausalLM(config).eval(), tokenizer


def test_a_sliding_window_model_is_not_given_the_shared_prefix_and_still_answers_as_alone(sliding_window_model):
    # Padding between the shared and own tokens would count as distance in the window.
    model, tokenizer = sliding_window_model
    ids = prompt_ids(tokenizer, few_shot_prompts())
    with torch.inference_mode():
        assert generation.prefix_cache(model, shared_prefix(ids)) is None
    expected = alone(model, tokenizer, ids, 8)
    assert continuations(model, tokenizer, ids, max_new_tokens=8, batch_size=3) == expected


def first_logits(model, tokenizer, ids: list[list[int]], shared: int) -> list[torch.Tensor]:
    """Each prompt's next-token logits: from one batch on `shared` cached tokens, and alone."""
    input_ids, mask = batch_inputs(ids, shared, tokenizer.eos_token_id)
    with torch.inference_mode():
        cache = model(input_ids=input_ids[:1, :shared], use_cache=True).past_key_values
        batch = model.generate(input_ids=input_ids, attention_mask=mask, past_key_values=generation.repeated(cache, len(ids)),
                               max_new_tokens=1, do_sample=False, output_logits=True, return_dict_in_generate=True,
                               pad_token_id=tokenizer.eos_token_id).logits[0]
        own = [model(input_ids=torch.tensor([row])).logits[0, -1] for row in ids]
    return [(b - o).abs().max().item() for b, o in zip(batch, own, strict=True)]


def test_padding_after_the_shared_prefix_is_invisible_to_full_attention(tiny_model_dir):
    model, tokenizer = load_folder(tiny_model_dir)
    ids = prompt_ids(tokenizer, few_shot_prompts())
    assert len({len(r) for r in ids}) > 1  # some rows are padded
    assert max(first_logits(model, tokenizer, ids, len(shared_prefix(ids)))) < 1e-4


def test_but_not_to_a_sliding_window_which_is_why_it_gets_no_shared_prefix(sliding_window_model):
    model, tokenizer = sliding_window_model
    ids = prompt_ids(tokenizer, few_shot_prompts())
    errors = first_logits(model, tokenizer, ids, len(shared_prefix(ids)))
    assert max(errors) > 1e-2  # the padded rows read differently


@pytest.fixture(scope="module")
def few_shot_alone(smollm_dir):
    """The real embedded model, the few-shot prompts' ids, and each one's 24-token reply generated alone."""
    model, tokenizer = load_folder(smollm_dir)
    ids = prompt_ids(tokenizer, few_shot_prompts())
    return model, tokenizer, ids, alone(model, tokenizer, ids, 24)


def test_rows_whose_reply_is_over_leave_the_batch_and_the_others_answer_as_alone(few_shot_alone, monkeypatch):
    model, tokenizer, ids, expected = few_shot_alone
    assert len({len(r) for r in expected}) > 2  # replies that end at different steps
    calls = generate_rows(model, monkeypatch)
    assert continuations(model, tokenizer, ids, max_new_tokens=24, batch_size=5) == expected
    assert calls[0] == 5 and min(calls) < 5  # rows left the batch, and the rest went on


def test_a_cache_that_cannot_drop_rows_goes_on_with_every_row(few_shot_alone, monkeypatch):
    model, tokenizer, ids, expected = few_shot_alone
    monkeypatch.setattr(generation, "prefix_cache", lambda m, s: None)  # generate makes the cache ...
    monkeypatch.setattr(generation, "prunable", lambda cache: False)  # ... and it cannot drop rows
    calls = generate_rows(model, monkeypatch)
    assert continuations(model, tokenizer, ids, max_new_tokens=24, batch_size=5) == expected
    assert len(calls) > 1 and set(calls) == {5}  # stopped early once, then every row went on


def test_a_sliding_window_cache_drops_rows_and_each_row_answers_as_alone(sliding_window_model, monkeypatch):
    model, tokenizer = sliding_window_model
    ids = prompt_ids(tokenizer, [[SYSTEM, {"role": "user", "content": q}] for q in QUESTIONS])
    free = alone(model, tokenizer, ids, 10, stops=set())
    stops = {row[n + 1] for n, row in enumerate(free)}  # a random model has no end of turn: rows stop where told
    expected = alone(model, tokenizer, ids, 10, stops=stops)
    assert len({len(r) for r in expected}) > 1
    input_ids, mask = batch_inputs(ids, 0, tokenizer.eos_token_id)
    calls = generate_rows(model, monkeypatch)
    with torch.inference_mode():
        got = generation.batch_continuations(model, input_ids, mask, None, 10, tokenizer.eos_token_id, stops)
    assert got == expected
    assert min(calls) < len(ids)


def test_a_generate_call_ends_once_a_quarter_of_its_rows_have_stopped():
    criterion = generation.StoppedShare({7}, rows=8)  # 2 of 8
    assert not criterion(torch.tensor([[1, 7]] + [[1, 2]] * 7), None).any()
    assert not criterion(torch.tensor([[7, 3]] + [[2, 2]] * 7), None).any()  # the same row, still one
    assert criterion(torch.tensor([[7, 3], [2, 7]] + [[2, 2]] * 6), None).all()
    assert generation.StoppedShare({7}, rows=1)(torch.tensor([[7]]), None).all()
