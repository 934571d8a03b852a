"""Where generation stops: the tokens that end an assistant turn, which every generation and every
saved model must stop at (a chat template's end of turn is often not the tokenizer's eos)."""

from __future__ import annotations

TURN_MARK = "\u2403end-of-turn\u2403"  # stands in for a reply, to find what the chat template writes after one


def end_of_turn_id(tokenizer) -> int | None:
    """The token the chat template closes an assistant turn with (<|im_end|>, <end_of_turn>, ...)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": TURN_MARK}], tokenize=False)
    after = text.split(TURN_MARK, 1)[1] if TURN_MARK in text else ""
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return next((i for i in tokenizer(after, add_special_tokens=False)["input_ids"] if i in special), None)


def pad_id(tokenizer) -> int:
    """The id batches are padded with: the tokenizer's own pad token, else its end of sequence."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def stop_tokens(model, tokenizer) -> list[int]:
    """Where generation stops: the generation config's eos, the tokenizer's, and the end of turn."""
    eos = model.generation_config.eos_token_id
    ids = [*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id, end_of_turn_id(tokenizer)]
    return list(dict.fromkeys(i for i in ids if i is not None))


def set_stops(model, tokenizer) -> None:
    """The generation config every saved model carries: stop at eos or the end of turn, and pad
    with the model's own pad token (Gemma's is id 0, which must not become eos)."""
    stops = stop_tokens(model, tokenizer)
    model.generation_config.eos_token_id = stops[0] if len(stops) == 1 else stops
    pad = tokenizer.pad_token_id
    model.generation_config.pad_token_id = pad if pad is not None else stops[0]
