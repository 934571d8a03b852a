"""A tiny Gemma 3 of either real architecture, random weights, with a tokenizer of the family.

Gemma's own files need the hub; this builds what a preset's base stage would load from it, at a
size a CPU trains in seconds: Gemma3ForCausalLM (gemma-3-270m-it) or Gemma3ForConditionalGeneration
(gemma-3-4b-it, with a SigLIP vision tower and the processor vLLM and transformers load with
it). The tokenizer is a SentencePiece model as Gemma's is (`tokenizer.model`: BPE with byte
fallback, no dummy prefix, whitespace kept), trained offline on the stand-in records, with
Gemma's special tokens at Gemma's ids (pad 0, eos 1, bos 2, unk 3, mask 4, <start_of_turn> 105,
<end_of_turn> 106; the image tokens follow), converted by transformers into the tokenizer.json
beside it as the hub ships both, and Gemma 3's own chat template; generation stops at eos or
<end_of_turn>, as gemma-3-it's does. llama.cpp's converter reads the tokenizer.model (export).
"""

from __future__ import annotations

import json
from pathlib import Path

from sft.models import SENTENCEPIECE_FILE

# Gemma 3's first ids: pad, eos, bos, unk, mask, [multimodal], <unused0..98>, then the turn tokens.
SPECIAL = (["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[multimodal]"] + [f"<unused{i}>" for i in range(99)]
           + ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"])
END_OF_TURN = SPECIAL.index("<end_of_turn>")  # 106, as in gemma-3-it's generation_config

# Gemma 3's chat template as google/gemma-3-*-it ship it: bos, the system text folded into the
# first user turn, contents trimmed, the assistant called `model`, roles that must alternate.
CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

# Widths are multiples of 64: bitsandbytes' 4-bit blocks (QLoRA) are 64 values wide.
# query_pre_attn_scalar equals head_dim as in gemma-3-270m and -4b (both 256): llama.cpp scales
# attention by 1/sqrt(head_dim), so transformers' default of 256 on a 32-wide head would make the
# GGUF a different model from the stand-in, not from the preset's.
TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 32, "query_pre_attn_scalar": 32, "sliding_window": 64,
        "max_position_embeddings": 32768}
VISION = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
          "image_size": 28, "patch_size": 14}
IMAGE_TOKENS = 4  # mm_tokens_per_image: 2 x 2 pooled patches of a 28-pixel image


def tokenizer(texts: list[str], vocab_size: int, folder: Path):
    """A SentencePiece model learnt from `texts` (folder/tokenizer.model), with Gemma's special
    tokens at Gemma's ids, loaded as transformers loads Gemma's, with Gemma 3's chat template."""
    import io

    import sentencepiece
    from transformers import AutoTokenizer

    model = io.BytesIO()
    # At least room for the 256 byte pieces, the special tokens and every character of the texts.
    size = max(vocab_size, 256 + len(SPECIAL) + len(set("".join(texts))) + 16)
    # Line by line: SentencePiece skips a training sentence longer than max_sentence_length.
    lines = [line for text in texts for line in text.splitlines() if line.strip()]
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), max_sentence_length=1 << 16, model_writer=model, vocab_size=size, hard_vocab_limit=False, model_type="bpe",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", user_defined_symbols=SPECIAL[4:], byte_fallback=True, split_digits=True,
        add_dummy_prefix=False, remove_extra_whitespaces=False, normalization_rule_name="identity",
        character_coverage=1.0, minloglevel=2)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").unlink(missing_ok=True)  # an earlier build's would be loaded instead of converted
    (folder / SENTENCEPIECE_FILE).write_bytes(model.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
        "unk_token": "<unk>", "mask_token": "<mask>", "add_bos_token": False, "add_eos_token": False,
        "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"],
        "extra_special_tokens": {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                 "image_token": "<image_soft_token>"}}))
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def model(model_class: str, vocab_size: int, seed: int):
    import torch
    from transformers import Gemma3Config, Gemma3ForCausalLM, Gemma3ForConditionalGeneration, Gemma3TextConfig

    ids = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
    text = Gemma3TextConfig(vocab_size=vocab_size, **TEXT, **ids)
    torch.manual_seed(seed)
    if model_class == "AutoModelForCausalLM":
        built = Gemma3ForCausalLM(text)
    else:
        built = Gemma3ForConditionalGeneration(Gemma3Config(
            text_config=text.to_dict(), vision_config=VISION, mm_tokens_per_image=IMAGE_TOKENS,
            boi_token_index=SPECIAL.index("<start_of_image>"), eoi_token_index=SPECIAL.index("<end_of_image>"),
            image_token_index=SPECIAL.index("<image_soft_token>"), **ids))
    built.generation_config.eos_token_id = [1, END_OF_TURN]  # gemma-3-it's generation_config.json
    built.generation_config.pad_token_id, built.generation_config.bos_token_id = 0, 2
    return built


def build(out: Path, model_class: str, texts: list[str], vocab_size: int = 4000, seed: int = 0) -> Path:
    """Writes the tiny model, its tokenizer and (for image-text-to-text) its processor to `out`."""
    tok = tokenizer(texts, vocab_size, out)
    built = model(model_class, len(tok), seed)
    built.save_pretrained(out)
    tok.save_pretrained(out)  # tokenizer.json beside the tokenizer.model, as the hub ships Gemma
    if model_class == "AutoModelForImageTextToText":
        from transformers import Gemma3ImageProcessorPil, Gemma3Processor

        image = Gemma3ImageProcessorPil(size={"height": VISION["image_size"], "width": VISION["image_size"]})
        Gemma3Processor(image_processor=image, tokenizer=tok, image_seq_length=IMAGE_TOKENS,
                        chat_template=CHAT_TEMPLATE).save_pretrained(out)
    return out
