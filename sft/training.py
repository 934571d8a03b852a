"""Training with trl's SFTTrainer: the train section's params, the trainer the train stage runs
(full, LoRA or QLoRA), the completion-only loss, and what falls back without a GPU.

Keys of `train:` other than the project's own (`epochs`, `method`, `lora_*`, ...) are SFTConfig
arguments and pass through under their trl/transformers names.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
import typing
from dataclasses import dataclass
from pathlib import Path

from sft import handoff
from sft.device import NATIVE_HALF_FLAGS, native_half_cpu, peak_memory_bytes
from sft.models import DTYPES, NF4_WEIGHTS, nf4_config
from sft.numerics import native_half_kernels
from sft.params import Range, UserError, check_ranges, check_types, from_dict, log_params, one_of, ranged, read_section

METHODS = ("full", "lora", "qlora")
ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
# SFTConfig arguments whose range transformers checks only once training runs, or never.
SFT_RANGES = {
    "learning_rate": Range(above=0), "per_device_train_batch_size": Range(low=1),
    "per_device_eval_batch_size": Range(low=1), "gradient_accumulation_steps": Range(low=1),
    "warmup_steps": Range(low=0), "warmup_ratio": Range(low=0, high=1),
    "logging_steps": Range(above=0), "eval_steps": Range(above=0), "save_steps": Range(above=0),
    "save_total_limit": Range(low=1), "weight_decay": Range(low=0), "max_grad_norm": Range(low=0),
    "adam_beta1": Range(low=0, below=1), "adam_beta2": Range(low=0, below=1), "adam_epsilon": Range(above=0),
    "label_smoothing_factor": Range(low=0, below=1), "neftune_noise_alpha": Range(low=0),
    "dataloader_num_workers": Range(low=0), "max_steps": Range(low=-1),
}


@dataclass
class TrainParams:
    method: str = "lora"  # full | lora | qlora (LoRA on a base loaded in 4-bit NF4 by bitsandbytes)
    epochs: float = ranged(2, above=0)  # passed on as num_train_epochs (`dvc exp run -S train.epochs=10`)
    lora_r: int = ranged(16, low=1)
    lora_alpha: int = ranged(32, above=0)
    lora_dropout: float = ranged(0.0, low=0, below=1)
    lora_target_modules: str | list[str] = "all-linear"
    use_dora: bool = False  # DoRA (weight-decomposed LoRA): often better at low rank, slower a step
    attn_implementation: str = "sdpa"  # flash_attention_2 on a GPU with flash-attn installed
    fused_lm_head: str | bool = "auto"  # trl's chunked LM-head loss; auto: on a GPU only (see trainer_class)
    keep_stale: int = ranged(2, low=0)  # interrupted runs set aside in models/train.stale/ when params or data change (newest kept)
    early_stopping_patience: int | None = None  # stop after this many evaluations without a better metric_for_best_model; None: never
    cpu_bf16: bool = False  # without a GPU: bf16 autocast on a CPU with AMX or AVX512-BF16 (refused without them)

    def __post_init__(self):
        one_of("train", "method", self.method, METHODS)
        one_of("train", "fused_lm_head", self.fused_lm_head, ("auto", True, False))
        patience = self.early_stopping_patience
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
            raise UserError(f"params.yaml: train.early_stopping_patience is {patience!r}; it must be a whole number "
                            "of evaluations, at least 1, or null (never stop early)")
        # A choice, never any string: transformers takes "owner/name" as a kernel repository on the
        # hub, whose code it downloads and runs at training time.
        one_of("train", "attn_implementation", self.attn_implementation, ATTENTION)


# Defaults that differ from SFTConfig's, each for a reason; params.yaml overrides any of them.
SFT_DEFAULTS = {
    "eval_strategy": "epoch",  # the workshop's practice: validation loss every epoch ...
    "save_strategy": "epoch",  # ... and a checkpoint to go with it, so select can pick the best
    "logging_strategy": "steps",
    "report_to": "none",  # DVCLive is attached by the train stage itself (sft/tracking.py)
    "dataloader_num_workers": 0,
    "save_only_model": False,  # optimizer and scheduler kept for resuming
    "prediction_loss_only": True,  # evaluation needs only the loss: no logits kept between batches
    # With a best metric named, save_total_limit never deletes the best checkpoint (only older others).
    "metric_for_best_model": "eval_loss",
    "include_num_input_tokens_seen": "non_padding",  # tokens/s in the progress bar and the logs
}

# Settings that change what is logged or kept, not what is trained: a resume ignores them.
TRACKING_KEYS = ("report_to", "run_name", "logging_steps", "disable_tqdm", "keep_stale")
# Settings added after runs were made whose default changes nothing: left out of a run's digest
# while at it, so a run made before they existed is the same run (and still resumes).
OFF_BY_DEFAULT = {"early_stopping_patience": None, "cpu_bf16": False}


def trained_by(p: TrainParams, sft: dict, train_on: str) -> dict:
    """What decides the trained weights: the resume fingerprint's params."""
    return {k: v for k, v in {**dataclasses.asdict(p), **sft, "train_on": train_on}.items()
            if k not in TRACKING_KEYS and not (k in OFF_BY_DEFAULT and v is OFF_BY_DEFAULT[k])}


def load_params(path: str = "params.yaml", announce: bool = True) -> tuple[TrainParams, dict]:
    from trl import SFTConfig

    values = read_section("train", path)
    if "max_length" in values:
        raise UserError(f"{path}: train.max_length is prepare's now: move it to prepare.max_length (prepare "
                        "tokenizes every record, checks its length and hands train the tokens)")
    sft_fields = {f.name for f in dataclasses.fields(SFTConfig)} - {"output_dir", "num_train_epochs"}
    p = from_dict(TrainParams, values, f"{path}: train", extra_valid=sft_fields)
    passed = {k: v for k, v in values.items() if k in sft_fields}
    check_types(passed, typing.get_type_hints(SFTConfig), f"{path}: train")
    check_ranges(passed, SFT_RANGES, f"{path}: train")
    for f in dataclasses.fields(SFTConfig):  # transformers lists some fields' choices, checks them only later
        if f.name in passed and "choices" in f.metadata:
            one_of("train", f.name, passed[f.name], f.metadata["choices"])
    init = passed.get("model_init_kwargs")
    if isinstance(init, dict):
        check_model_init_kwargs(init, path)
    for key in passed:
        if key in TRAINER_IO or key.startswith("hub_"):
            raise UserError(f"{path}: train.{key} is the stage's to decide: it reads only its deps and writes only its "
                            "outputs (resume: dvc repro after a kill; upload a finished model yourself: hf upload)")
    if passed.get("max_steps", -1) == 0:
        raise UserError(f"{path}: train.max_steps is 0: nothing would be trained; -1 (epochs decide) or more")
    sft = {**SFT_DEFAULTS, **passed}
    if announce:
        log_params("train", {**dataclasses.asdict(p), **sft})
    return p, sft


# Trainer arguments that read or write outside the stage's deps and outputs (an upload to the hub,
# a checkpoint or template from any path): refused, with hub_* (where the upload goes).
TRAINER_IO = ("push_to_hub", "resume_from_checkpoint", "chat_template_path")

# from_pretrained's arguments a user may set under train.model_init_kwargs: how the base is held in
# memory. Others change what code runs (trust_remote_code, an attn_implementation naming a hub kernel
# repository, a revision) and have their own checked keys, or none.
MODEL_INIT_KEYS = ("dtype", "device_map", "low_cpu_mem_usage", "use_cache")


def check_model_init_kwargs(init: dict, path: str) -> None:
    for key in init:
        if key not in MODEL_INIT_KEYS:
            where = " (it is train.attn_implementation, a choice)" if key == "attn_implementation" else ""
            raise UserError(f"{path}: train.model_init_kwargs.{key} is not accepted{where}; the keys are "
                            f"{', '.join(MODEL_INIT_KEYS)}")
    if "dtype" in init:
        one_of("train", "model_init_kwargs.dtype", init["dtype"], DTYPES)
    if "device_map" in init and not isinstance(init["device_map"], str | dict):
        raise UserError(f"{path}: train.model_init_kwargs.device_map must be a name (auto) or a mapping")


HALF_DTYPES = ("bfloat16", "float16")
# GPU-only settings and what each becomes on a machine without CUDA.
CPU_FALLBACKS = {"bf16": False, "fp16": False, "use_liger_kernel": False}
GPU_OPTIMIZERS = ("adamw_torch_4bit", "paged_adamw_8bit", "paged_adamw_32bit", "adamw_torch_fused")


# GPU settings that need a package of the GPU extra, and what each becomes without it.
NEEDS_PACKAGE = {("use_liger_kernel", True): ("liger_kernel", False), ("optim", "adamw_torch_4bit"): ("torchao", "adamw_torch"),
                 ("optim", "paged_adamw_8bit"): ("bitsandbytes", "adamw_torch"),
                 ("optim", "paged_adamw_32bit"): ("bitsandbytes", "adamw_torch"),
                 ("optim", "adamw_bnb_8bit"): ("bitsandbytes", "adamw_torch")}


def without_missing_packages(sft: dict) -> dict:
    """On a CUDA machine without the GPU extra (liger-kernel, torchao, bitsandbytes), the settings
    that need it fall back, each with one line saying so, instead of failing in the trainer."""
    sft = {**sft}
    for (key, value), (package, fallback) in NEEDS_PACKAGE.items():
        if sft.get(key) == value and importlib.util.find_spec(package) is None:
            print(f"[train] {package} is not installed: train.{key} {value} -> {fallback} (make setup installs "
                  "the GPU extra on a CUDA machine; see docs/gpu-settings.md)", flush=True)
            sft[key] = fallback
    return sft


def without_gpu_only_settings(sft: dict, has_cuda: bool) -> dict:
    """On a CPU, GPU-only settings fall back (fp32, no liger), each with one line saying so; on a
    GPU, those whose package is missing."""
    if has_cuda:
        return without_missing_packages(sft)
    # Pinned memory speeds copies to a GPU; without one, torch warns at every dataloader it starts.
    sft = {"dataloader_pin_memory": False, **sft}
    if sft.get("optim") in GPU_OPTIMIZERS:
        print(f"[train] no CUDA GPU: train.optim {sft['optim']} -> adamw_torch", flush=True)
        sft["optim"] = "adamw_torch"
    init = sft.get("model_init_kwargs")
    if isinstance(init, dict) and init.get("dtype") in HALF_DTYPES:
        print(f"[train] no CUDA GPU: train.model_init_kwargs.dtype {init['dtype']} -> float32 (see docs/gpu-settings.md)",
              flush=True)
        sft["model_init_kwargs"] = {**init, "dtype": "float32"}
    for key, fallback in CPU_FALLBACKS.items():
        # SFTConfig's own default for bf16 is true; the CPU run must not depend on params naming it.
        if sft.get(key, key == "bf16") != fallback:
            print(f"[train] no CUDA GPU: train.{key} -> {fallback} (see docs/gpu-settings.md)", flush=True)
        sft[key] = fallback
    return sft


def cpu_bf16_flag(p: TrainParams, has_cuda: bool) -> str | None:
    """Where train.cpu_bf16 applies (set, and no CUDA): the CPU's bf16 instruction flag; refused in
    one line on a CPU without one, where bf16 is emulated and slower than float32. Else None."""
    if not p.cpu_bf16 or has_cuda:
        return None
    if (flag := native_half_cpu("bfloat16")) is None:
        raise UserError("params.yaml: train.cpu_bf16 is true, but this CPU has neither AMX nor AVX512-BF16 "
                        f"({' nor '.join(NATIVE_HALF_FLAGS['bfloat16'])} in /proc/cpuinfo): bf16 would be "
                        "emulated, far slower than float32; set train.cpu_bf16: false")
    return flag


def with_cpu_bf16(p: TrainParams, sft: dict, has_cuda: bool) -> dict:
    """train.cpu_bf16: the Trainer's bf16 autocast on the CPU, weights and optimizer in float32,
    the bf16 products on the CPU's own instructions (sft/numerics.py: oneDNN's cap lifted here)."""
    if (flag := cpu_bf16_flag(p, has_cuda)) is None:
        return sft
    native_half_kernels()
    print(f"[train] train.cpu_bf16: bf16 autocast on the CPU ({flag}); float32 weights and optimizer", flush=True)
    return {**sft, "bf16": True, "use_cpu": True}  # transformers' CPU autocast needs both


def applied_settings(p: TrainParams, sft: dict, has_cuda: bool) -> dict:
    """SFTConfig's arguments as the trainer gets them: params.yaml's, the project's defaults, and
    what falls back on this machine (each fallback said in one line)."""
    return with_cpu_bf16(p, without_gpu_only_settings(sft, has_cuda), has_cuda)


def trainer_config(p: TrainParams, applied: dict, out: str):
    from trl import SFTConfig

    return SFTConfig(output_dir=out, num_train_epochs=p.epochs, **applied)


def sft_config(p: TrainParams, sft: dict, out: str, has_cuda: bool):
    return trainer_config(p, applied_settings(p, sft, has_cuda), out)


def applied_attention(p: TrainParams, has_cuda: bool) -> tuple[str, str | None]:
    """The attention kernel train loads the base with, and why it is not the one asked for (or None)."""
    if p.attn_implementation != "flash_attention_2":
        return p.attn_implementation, None
    if not has_cuda:
        return "sdpa", "no CUDA GPU: train.attn_implementation flash_attention_2 -> sdpa"
    if importlib.util.find_spec("flash_attn") is None:
        return "sdpa", ("flash-attn is not installed: train.attn_implementation flash_attention_2 -> sdpa "
                        "(make setup FLASH_ATTN=1 builds it; it needs the CUDA toolkit)")
    return p.attn_implementation, None


def model_load_kwargs(p: TrainParams, has_cuda: bool) -> dict:
    """How train loads the base: its attention kernel, and 4-bit NF4 weights for QLoRA."""
    attn, why = applied_attention(p, has_cuda)
    if why:
        print(f"[train] {why}", flush=True)
    kwargs = {"attn_implementation": attn}
    if p.method == "qlora":
        kwargs["quantization_config"] = nf4_config(has_cuda)
    return kwargs


# How the run is tracked: W&B or not follows the environment as much as params.yaml
# (sft/tracking.py), so it stays out of the record, a hashed output.
UNRECORDED = ("report_to", "run_name")


def decided(p: TrainParams, values: dict, applied: dict, config, has_cuda: bool, made: dict) -> dict:
    """What the train stage decided, written beside models/train for the stages after it (select,
    merge, the card), which read it instead of train: of params.yaml: the method, the adapter and
    the base's quantization, the loss, the global batch, max_length and train_on as prepare applied
    them, `settings` (every project key and every trainer argument params.yaml sets, at the value
    applied) and `project_settings` (the trainer arguments the project's defaults and this
    machine's fallbacks set, as applied)."""
    as_applied = config.to_dict()
    own = {f.name for f in dataclasses.fields(TrainParams)}
    settings = {**dataclasses.asdict(p), "attn_implementation": applied_attention(p, has_cuda)[0],
                **{k: as_applied[k] for k in values if k in as_applied and k not in own}}
    return {
        "method": p.method,
        "adapter": adapter_settings(p),
        "quantization": dict(NF4_WEIGHTS) if p.method == "qlora" else None,
        "loss": "trl_fused_lm_head" if uses_fused_lm_head(p, has_cuda) else "completion_only_lm_head",
        "world_size": config.world_size,
        "global_batch": global_batch(config),
        "max_length": made["max_length"],
        "train_on": made["train_on"],
        "settings": {k: v for k, v in settings.items() if k not in UNRECORDED},
        "project_settings": {k: as_applied[k] for k in sorted(applied) if k not in values and k not in UNRECORDED},
    }


def adapter_settings(p: TrainParams) -> dict | None:
    """The LoRA adapter trained (None for a full fine-tune), as peft_config builds it."""
    if p.method == "full":
        return None
    return {"r": p.lora_r, "lora_alpha": p.lora_alpha, "lora_dropout": p.lora_dropout,
            "target_modules": p.lora_target_modules, "use_dora": p.use_dora}


def peft_config(p: TrainParams):
    if p.method == "full":
        return None
    from peft import LoraConfig

    return LoraConfig(r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout,
                      target_modules=p.lora_target_modules, use_dora=p.use_dora, task_type="CAUSAL_LM")


def uses_fused_lm_head(p: TrainParams, has_cuda: bool) -> bool:
    return has_cuda if p.fused_lm_head == "auto" else p.fused_lm_head


def completion_loss(model, inputs: dict, num_items_in_batch=None):
    """The completion-only loss with the LM head applied to completion positions only.

    Prompt tokens carry no loss, yet the model's own loss projects every position onto the whole
    vocabulary: in text-to-SQL records ~90% of positions are prompt, so most of the largest
    activation (tokens x 49k logits) is built and thrown away. Here the decoder runs as usual and
    only the hidden states that predict a completion token go through the LM head. Same value as
    the model's loss (test_train.py checks); None where the model does not fit this shape.
    """
    import torch

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not hasattr(inner, "get_output_embeddings"):
        return None  # wrapped for DDP/FSDP: the wrapper's own forward must run for its gradient hooks
    decoder, head = getattr(inner, "model", None), inner.get_output_embeddings()
    if decoder is None or head is None or getattr(inner.config, "final_logit_softcapping", None):
        return None
    labels = inputs["labels"]
    kwargs = {k: inputs[k] for k in ("attention_mask", "position_ids") if k in inputs}
    hidden = decoder(input_ids=inputs["input_ids"], **kwargs).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    logits = head(hidden[:, :-1][keep]).float()
    total = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else keep.sum()
    return total / count


def trainer_class(fused_lm_head: bool):
    """SFTTrainer, or on a CPU a subclass that computes the loss itself.

    trl computes the loss through a fused, chunked LM head: Triton kernels on a GPU, plain torch
    tiles elsewhere. On 2 CPU cores the tiles made a LoRA step of SmolLM2-135M 1.46x slower
    (14.3 s against 9.8 s for 8 records) than the model's own loss; the completion-only LM head
    (completion_loss) is faster again and needs far less memory. The value is the same
    completion-only mean (test_train.py checks); only trl's entropy and token-accuracy logs are lost.
    """
    from transformers import Trainer
    from trl import SFTTrainer

    if fused_lm_head:
        return SFTTrainer

    class PlainLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # The decoder is called past the forward accelerate wraps in autocast: mixed precision
            # (bf16 on a GPU, train.cpu_bf16 on a CPU) is applied here as it is there.
            with self.accelerator.autocast():
                loss = None if return_outputs else completion_loss(model, inputs, num_items_in_batch)
            if loss is None:
                return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss does: DDP averages
            return loss

    return PlainLossSFTTrainer


def early_stopping(p: TrainParams) -> list:
    """transformers' EarlyStoppingCallback on metric_for_best_model (eval_loss unless set): the run
    ends after `early_stopping_patience` evaluations without a better one. Its checkpoints stay, so
    select still picks the best of those evaluated."""
    if p.early_stopping_patience is None:
        return []
    from transformers import EarlyStoppingCallback

    return [EarlyStoppingCallback(early_stopping_patience=p.early_stopping_patience)]


def token_split(data: Path, split: str):
    """A trained split as prepare wrote it (sft/handoff.py): a datasets.Dataset of token ids and
    loss masks, which SFTTrainer takes as they are (it builds the labels from `assistant_masks`)."""
    from datasets import Dataset

    rows = handoff.token_rows(data, split)
    if not rows:
        raise UserError(f"{handoff.tokens_file(data, split)} has no records; check prepare.max_records")
    return Dataset.from_list(rows)


def dataset_tokens(dataset) -> int:
    """Tokens of the tokenized records: what the model really reads, padding excluded."""
    return sum(len(ids) for ids in dataset["input_ids"])


def global_batch(args) -> int:
    """Records per optimizer step: per device x processes x accumulation."""
    return args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps


def run_figures(trainer, started: float, dataset) -> dict:
    """Final figures of the run: metrics/train.json, and the machine's speed (sft.volatile)."""
    history = trainer.state.log_history
    evals = [h for h in history if "eval_loss" in h]
    train_end = next((h for h in reversed(history) if "train_loss" in h), {})
    seconds = time.time() - started
    tokens = dataset_tokens(dataset) * trainer.args.num_train_epochs
    peak = peak_memory_bytes()
    return {
        "eval_loss": evals[-1]["eval_loss"] if evals else None,
        "train_loss": train_end.get("train_loss"),
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "world_size": trainer.args.world_size,
        "global_batch": global_batch(trainer.args),
        "train_seconds": round(seconds, 1),
        "tokens_per_second": round(tokens / seconds, 1),  # non-padding tokens per wall second, evaluation included
        "peak_memory_gb": round(peak / 2**30, 2),
    }


def make_trainer(p: TrainParams, config, model_dir: str, data: Path, has_cuda: bool, callbacks=()):
    """The stage's trainer: the base loaded for the method (and `model_init_kwargs`, trl's key:
    `{dtype: bfloat16}` halves weights, gradients and optimizer state against the float32 default),
    the token ids and loss masks prepare wrote (sft/handoff.py), the loss for
    the machine, LoRA when asked for, a progress bar with tokens/s. The train stage runs it;
    bench/train.py measures it."""
    from sft import tracking
    from sft.models import load_folder

    # The stage loads the model itself, so trl would ignore (and warn about) these: they are used here.
    init, config.model_init_kwargs = dict(config.model_init_kwargs or {}), None
    model, tokenizer = load_folder(model_dir, **{**model_load_kwargs(p, has_cuda), **init})
    if p.method == "qlora":  # said, so a run shows it really trains on 4-bit weights
        four_bit = sum(type(m).__name__ == "Linear4bit" for m in model.modules())
        print(f"[train] QLoRA: {four_bit} linear layers hold 4-bit NF4 weights (bitsandbytes)", flush=True)
    trainer = trainer_class(uses_fused_lm_head(p, has_cuda))(
        model=model, args=config, train_dataset=token_split(data, "train"),
        eval_dataset=token_split(data, "validation"),
        processing_class=tokenizer, peft_config=peft_config(p), callbacks=[*callbacks, *early_stopping(p)])
    tracking.show_tokens_per_second(trainer)
    return trainer, tokenizer
