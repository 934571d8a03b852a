"""A tiny Gemma 3 of either real architecture, random weights, with a tokenizer of the family.

Gemma's own files need the hub; this builds what a preset's base stage would load from it, at a
size a CPU trains in seconds: Gemma3ForCausalLM (gemma-3-270m-it) or Gemma3ForConditionalGeneration
(gemma-3-4b-it, with a SigLIP vision tower and the processor vLLM and transformers load with
it). The tokenizer is a byte-level BPE trained on the stand-in records, with Gemma's special
tokens at Gemma's ids for pad (0), eos (1), bos (2) and unk (3), its turn and image tokens, and
Gemma 3's own chat template; generation stops at eos or <end_of_turn>, as gemma-3-it's does.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
           "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
END_OF_TURN = SPECIAL.index("<end_of_turn>")

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
TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 32, "sliding_window": 64, "max_position_embeddings": 32768}
VISION = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
          "image_size": 28, "patch_size": 14}
IMAGE_TOKENS = 4  # mm_tokens_per_image: 2 x 2 pooled patches of a 28-pixel image


def tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE learnt from `texts`, with Gemma's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>", additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"})
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
    tok = tokenizer(texts, vocab_size)
    built = model(model_class, len(tok), seed)
    out.mkdir(parents=True, exist_ok=True)
    built.save_pretrained(out)
    tok.save_pretrained(out)
    if model_class == "AutoModelForImageTextToText":
        from transformers import Gemma3ImageProcessorPil, Gemma3Processor

        image = Gemma3ImageProcessorPil(size={"height": VISION["image_size"], "width": VISION["image_size"]})
        Gemma3Processor(image_processor=image, tokenizer=tok, image_seq_length=IMAGE_TOKENS,
                        chat_template=CHAT_TEMPLATE).save_pretrained(out)
    return out
