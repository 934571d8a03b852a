"""Before renting: the GPU memory a preset's training needs at its batch and length, and the disk
its run fills, estimated from the real model's architecture (rehearsal/configs/, no download) and
the preset's own settings. Printed by the rehearsal before it runs.

Memory at the peak of a training step, in parts:
- weights at the load dtype (`train.model_init_kwargs.dtype`; QLoRA: the linear layers in 4-bit
  NF4 with double quantization, ~4.13 bits a weight, the rest at the load dtype);
- what is trained, its gradients and AdamW's two states (full: at the load dtype, as torch keeps
  them; LoRA: float32 adapters; an 8-bit or 4-bit optimizer stores its states in 1 or 0.5 bytes);
- activations for every token of the longest batch (batch x max_length): with gradient
  checkpointing each layer's input plus one layer's working set, without it every layer's;
- the logits when the loss materializes them (no liger-kernel and no fused LM head), measured at
  15 bytes a logit (bench/results/gpu-nvidia-h200.json);
- 1 GB for the CUDA context and the allocator's workspace.
Checked against that H200 run (gemma-3-270m, full fine-tune in bf16): within 25% of the measured
peak with and without liger-kernel (tests/test_rehearsal.py). An estimate, not a promise: choose
a card with a margin.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CONFIGS = Path(__file__).parent / "configs"
GB = 1e9
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NF4_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8  # 4-bit values, 8-bit absmax a block of 64, fp32 a block of 256 of those
LOGIT_BYTES = 15  # bf16 logits, their float32 upcast, softmax and gradients: measured on the H200 run
CONTEXT_GB = 1.0
GGUF_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "q8_0": 34 / 32, "q6_k": 210 / 256, "q5_k_m": 176 / 256,
              "q4_k_m": 152 / 256}  # bytes a weight of llama.cpp's types (k-quants: their mixes, roughly)


def config_file(model: str) -> Path | None:
    path = CONFIGS / f"{model.replace('/', '--')}.json"
    return path if path.is_file() else None


@dataclass
class Counts:
    total: int  # every parameter, a tied embedding once
    text: int  # the language model's (what the GGUF holds)
    linear: int  # weights of the linear layers LoRA targets and 4-bit quantizes (not the LM head)
    lora_per_rank: int  # sum of in + out over those layers: LoRA's trainable parameters per unit of rank
    text_config: dict


def counts(config_path: Path, model_class: str) -> Counts:
    """Parameter counts of the architecture, built on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoConfig

    from sft.models import auto_class

    config = AutoConfig.for_model(**json.loads(config_path.read_text()))
    with torch.device("meta"):
        model = auto_class(model_class).from_config(config)
    text = getattr(config, "text_config", config)
    tied = getattr(text, "tie_word_embeddings", True)
    seen, total, in_text, linear, per_rank = set(), 0, 0, 0, 0
    for name, p in model.named_parameters():
        if id(p) in seen or (tied and name.endswith("lm_head.weight")):
            continue
        seen.add(id(p))
        total += p.numel()
        in_text += p.numel() if "vision" not in name and "multi_modal" not in name else 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            linear += module.weight.numel()
            per_rank += module.in_features + module.out_features
    return Counts(total, in_text, linear, per_rank, text.to_dict())


def activation_bytes_per_token(text: dict, checkpointing: bool, act_bytes: int) -> float:
    """What backward keeps of one token: each layer's input (checkpointing: recomputed from it, one
    layer's working set at a time) or every layer's working set (norms, q/k/v, attention output,
    the MLP's gate, up, activation and product)."""
    d, i, layers = text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"]
    head = text.get("head_dim") or d // text["num_attention_heads"]
    q, kv = text["num_attention_heads"] * head, text["num_key_value_heads"] * head
    layer = (6 * d + 3 * q + 2 * kv + 4 * i) * act_bytes
    return layers * d * act_bytes + layer if checkpointing else layers * layer


def load_bytes(train: dict) -> int:
    """Bytes a weight as training loads it (trl's `model_init_kwargs.dtype`; float32 unset)."""
    return DTYPE_BYTES[(train.get("model_init_kwargs") or {}).get("dtype", "float32")]


def optimizer_state_bytes(optim: str, param_bytes: float) -> float:
    """AdamW's two states a trained parameter: torch keeps them at the parameter's dtype."""
    return 2 * (0.5 if "4bit" in optim else 1 if "8bit" in optim else param_bytes)


def training_memory(c: Counts, train: dict, batch: int, max_length: int) -> dict:
    """GB at the peak of a training step, by part."""
    method = train.get("method", "lora")
    load = load_bytes(train)
    act = 2 if train.get("bf16") else 4
    if method == "qlora":
        weights = c.linear * NF4_BYTES + (c.total - c.linear) * load
    else:
        weights = c.total * load
    trained = c.total if method == "full" else train.get("lora_r", 16) * c.lora_per_rank
    trained_bytes = load if method == "full" else 4  # LoRA adapters are float32 (peft's autocast_adapter_dtype)
    optim = str(train.get("optim", "adamw_torch"))
    state = trained * (trained_bytes + optimizer_state_bytes(optim, trained_bytes))
    tokens = batch * max_length
    activations = tokens * activation_bytes_per_token(c.text_config, train.get("gradient_checkpointing", True), act)
    fused = train.get("use_liger_kernel") or train.get("fused_lm_head", "auto") in ("auto", True)  # auto: on a GPU
    logits = 0 if fused else tokens * c.text_config["vocab_size"] * LOGIT_BYTES
    parts = {"weights": weights, "trained, gradients, optimizer": state, "activations": activations,
             "logits": logits, "CUDA context": CONTEXT_GB * GB}
    return {k: v / GB for k, v in parts.items()}


def disk(c: Counts, params: dict) -> dict:
    """GB the run leaves on disk, by part: DVC links its cache into the workspace (.dvc/config),
    so each output is stored once; a stale run's outputs stay in the cache until `dvc gc`."""
    train = params["train"]
    load = load_bytes(train)
    optim = str(train.get("optim", "adamw_torch"))
    if train.get("method", "lora") == "full":
        checkpoint = c.total * (load + optimizer_state_bytes(optim, load))
    else:
        trained = train.get("lora_r", 16) * c.lora_per_rank
        checkpoint = trained * (4 + optimizer_state_bytes(optim, 4))
    outtype = params["export"].get("outtype", "f16")
    parts = {"hub download (bf16)": c.total * 2, "models/base": c.total * DTYPE_BYTES[params["base"].get("dtype", "float32")],
             f"{train.get('epochs', 1)} checkpoints": train.get("epochs", 1) * checkpoint,
             "models/merged": c.total * DTYPE_BYTES[params["merge"].get("dtype", "float32")],
             f"GGUF {outtype}": c.text * GGUF_BYTES.get(outtype, 2)}
    return {k: v / GB for k, v in parts.items()}


def described(parts: dict) -> str:
    return f"~{sum(parts.values()):.1f} GB (" + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()) + ")"


def before_renting(params: dict) -> str | None:
    """One line for the preset's real model, or None where no config of it is shipped."""
    model, model_class = params["base"]["model_name_or_path"], params["base"].get("model_class", "AutoModelForCausalLM")
    path = config_file(model)
    if path is None:
        return None
    c = counts(path, model_class)
    train = params["train"]
    batch, max_length = train.get("per_device_train_batch_size", 8), params["prepare"].get("max_length", 1024)
    memory = training_memory(c, train, batch, max_length)
    return (f"[rehearse] before renting, for {model} ({c.total:,} parameters; {path.relative_to(CONFIGS.parents[1])}): "
            f"GPU memory training {train.get('method', 'lora')} at batch {batch} x {max_length} tokens "
            f"{described(memory)}; disk {described(disk(c, params))}")
