"""The model card (README.md in the Hugging Face format, YAML header included), written with
huggingface_hub's ModelCard from the run's own params and metrics: nothing in it is typed by hand
or depends on the machine, so the same run gives the same bytes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ base_model }} fine-tuned ({{ method }}) on {{ data_names }} with this repository's DVC pipeline
(prepare, train, select, merge, evaluate, export).

## Results

Test split, {{ samples }} items, greedy decoding. 95% intervals in brackets; each difference is the
fine-tuned model's against that row's model, paired on the same items.

| model | {{ metric }} | fine-tuned minus it |
|---|---|---|
| baseline ({{ base_model }}) | {{ baseline }} | {{ difference }} |
| baseline, {{ shots }}-shot (train examples before each prompt) | {{ fewshot }} | {{ fewshot_difference }} |
{{ other_rows }}| fine-tuned | {{ finetuned }} | |
{{ quantized }}
Outside the task: general-text loss (mean per-token cross-entropy on {{ forgetting_documents }} documents
of `{{ forgetting_dataset }}`, paired by document) {{ forgetting }}.

## Training

| setting | value |
|---|---|
{{ training_rows }}

## Data

{{ data_rows }}

## Prompt format

The model was trained on prompts rendered by its own chat template; one validation prompt as it
sees it (the reply follows it):

```text
{{ prompt_example }}
```

Generation stops at {{ stops }}.

## Use

transformers:

```python
from transformers import pipeline

chat = pipeline("text-generation", model="models/merged")
print(chat([{"role": "user", "content": "..."}], max_new_tokens=128, do_sample=False)[0]["generated_text"][-1])
```

vLLM (an OpenAI-compatible server; `make serve` does this on a GPU):

```bash
vllm serve models/merged --served-model-name local
```

llama.cpp ({{ gguf }}):

```bash
llama-cli -m models/gguf/{{ gguf }} -cnv
python -m llama_cpp.server --model models/gguf/{{ gguf }} --model_alias local
```

Ollama (the Modelfile's template and stops come from the same chat template):

```bash
cd models/gguf && ollama create {{ ollama_name }} -f Modelfile && ollama run {{ ollama_name }}
```

![training and validation loss](loss.png)
"""


@dataclass
class RunFacts:
    """What the card says, all read from the run's params and metrics files."""
    base_model: str
    license: str
    datasets: list[dict]  # {dataset, subset, revision}
    method: str
    train_settings: dict  # train: of params.yaml, with metrics/train.json's global_batch
    compare: dict  # metrics/compare.json
    finetuned: dict  # metrics/finetuned.json
    baseline: dict  # metrics/baseline.json
    fewshot: dict  # metrics/fewshot.json
    shots: int  # fewshot.shots of params.yaml
    forgetting: dict  # metrics/forgetting.json
    forgetting_dataset: str  # forgetting.dataset of params.yaml
    prompt_example: str
    stops: list[str]
    gguf: str
    quantized: dict | None = None  # the GGUF's own test figures, for quantized types
    others: list[dict] = field(default_factory=list)  # other models: name, model, revision, figures (sft/pairing.py)


def _figure(figures: dict, metric: str) -> str:
    low, high = figures.get(f"{metric}_ci_low"), figures.get(f"{metric}_ci_high")
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"{figures[metric]:.3f}{interval}"


def _difference(compare: dict, digits: int = 3) -> str:
    """A paired difference (sft/stats.py) with its interval."""
    return (f"{compare['difference']:+.{digits}f} [{compare['difference_ci_low']:+.{digits}f}, "
            f"{compare['difference_ci_high']:+.{digits}f}]")


def _cell(text: str) -> str:
    """A name from params.yaml as a table cell's code span: no backtick or bar can end either."""
    return "`" + text.replace("`", "'").replace("|", "/").replace("\n", " ") + "`"


def _other_rows(others: list[dict], metric: str) -> str:
    rows = []
    for o in others:
        at = f" at {_cell(o['revision'][:12])}" if o["revision"] else ""
        rows.append(f"| {o['name']} ({_cell(o['model'])}{at}) | {_figure(o, metric)} | "
                    f"{_difference(o['against_finetuned'])} |\n")
    return "".join(rows)


def _forgetting(figures: dict) -> str:
    return (f"{figures['base_loss']:.3f} -> {figures['finetuned_loss']:.3f} nats a token, "
            f"{_difference(figures, 4)}")


def model_card(facts: RunFacts, model_name: str):
    """A huggingface_hub ModelCard: the header from ModelCardData (model-index with the task metric)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    metric = facts.compare["metric"]
    first = facts.datasets[0]
    data = ModelCardData(
        base_model=facts.base_model, license=facts.license, model_name=model_name,
        datasets=[d["dataset"] for d in facts.datasets], pipeline_tag="text-generation", library_name="transformers",
        tags=["sft", "trl", "dvc", facts.method, "gguf"],
        eval_results=[EvalResult(task_type="text-generation", dataset_type=first["dataset"],
                                 dataset_name=first["dataset"], dataset_config=first.get("subset"),
                                 dataset_split="test", dataset_revision=first.get("revision"),
                                 metric_type=metric, metric_name=metric, metric_value=facts.finetuned[metric])])
    quantized = ""
    if facts.quantized:
        quantized = (f"| {facts.gguf} (llama.cpp) | {_figure(facts.quantized, metric)} | |\n")
    rows = "\n".join(f"| `{k}` | `{json.dumps(v)}` |" for k, v in sorted(facts.train_settings.items()))
    data_rows = "\n".join(f"- `{d['dataset']}`" + (f" subset `{d['subset']}`" if d.get("subset") else "")
                          + (f" at revision `{d['revision']}`" if d.get("revision") else "") for d in facts.datasets)
    return ModelCard.from_template(
        data, template_str=CARD_TEMPLATE, model_name=model_name, base_model=facts.base_model, method=facts.method,
        data_names=", ".join(f"`{d['dataset']}`" for d in facts.datasets), metric=metric,
        samples=facts.finetuned.get("samples", "?"), baseline=_figure(facts.baseline, metric),
        finetuned=_figure(facts.finetuned, metric), difference=_difference(facts.compare), quantized=quantized,
        shots=facts.shots, fewshot=_figure(facts.fewshot, metric),
        fewshot_difference=_difference(facts.compare["against_fewshot"]),
        other_rows=_other_rows(facts.others, metric), forgetting=_forgetting(facts.forgetting),
        forgetting_documents=facts.forgetting["documents"], forgetting_dataset=facts.forgetting_dataset,
        training_rows=rows, data_rows=data_rows, prompt_example=facts.prompt_example,
        stops=", ".join(f"`{s}`" for s in facts.stops), gguf=facts.gguf,
        ollama_name=model_name.lower().replace(" ", "-").replace("/", "-"))
