"""Standard benchmarks by lm-evaluation-harness: the benchmarks section of params.yaml, the harness
run on one model folder, and its results as this project records them.

Nothing of the harness is rewritten: its tasks, prompts, metrics and standard errors are its own;
this module picks the tasks (the shipped suite in data/benchmarks/, or any of the harness's own with
its dataset pinned by a commit), hands it the model as the project loads it (dtype and device rules
of evaluate), and keeps every task's figure, its standard error, the settings that make the figure
comparable (the harness's version, the task's version, the chat template flag, shots, items,
dtype, backend) and each item's outcome, which compare pairs. LightEval was the first choice; it
cannot be installed beside dvc (docs/benchmarks.md says why).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from sft.models import DTYPES
from sft.others import COMMIT
from sft.params import PARAMS_FILE, UserError, one_of, ranged

SUITE = "data/benchmarks"  # the shipped tasks: one harness YAML and its data file a task
BACKENDS = ("auto", "transformers", "vllm")
# A harness task name, never a path: the harness also loads a string that names a YAML file, and a
# task YAML may run code (`!function`); only the suite folder's YAMLs and the harness's own are read.
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass
class BenchmarksParams:
    tasks: list = field(default_factory=lambda: ["sft_general", "sft_reading"])  # harness task names
    revisions: dict = field(default_factory=dict)  # a hub task's dataset pinned: {task: <40-hex commit sha>}
    num_fewshot: int = ranged(0, low=0)
    apply_chat_template: bool = False
    limit: int | None = ranged(None, low=1)  # items a task at most, in its order (null: all)
    batch_size: int = ranged(32, low=1)
    dtype: str = "float32"
    backend: str = "auto"  # vLLM on a CUDA GPU with vllm installed, else transformers

    def __post_init__(self):
        where = f"{PARAMS_FILE}: benchmarks"
        one_of("benchmarks", "dtype", self.dtype, DTYPES)
        one_of("benchmarks", "backend", self.backend, BACKENDS)
        for task in self.tasks:
            if not isinstance(task, str) or not TASK_NAME.fullmatch(task):
                raise UserError(f"{where}.tasks: {task!r} is not a task name (letters, digits, '_', '.', '-'); name "
                                f"a task of {SUITE}/ or of lm-evaluation-harness (lm-eval ls tasks)")
        if twice := sorted({t for t in self.tasks if self.tasks.count(t) > 1}):
            raise UserError(f"{where}.tasks names {', '.join(twice)} twice; list each task once")
        for task, sha in self.revisions.items():
            if task not in self.tasks:
                raise UserError(f"{where}.revisions.{task}: not in benchmarks.tasks; add the task or drop its pin")
            if not isinstance(sha, str) or not COMMIT.fullmatch(sha):
                raise UserError(f"{where}.revisions.{task} is {sha!r}; pin the dataset's 40-hex commit sha (its "
                                "hub page's 'Files and versions'): a branch moves, and DVC would keep old figures")


def suite_tasks(suite: str | Path) -> dict[str, Path]:
    """The shipped tasks: task name -> its YAML, read from each YAML's `task:` line."""
    found = {}
    for path in sorted(Path(suite).glob("*.yaml")):
        name = next((line.split(":", 1)[1].strip() for line in path.read_text(encoding="utf-8").splitlines()
                     if line.startswith("task:")), None)
        if name:
            found[name] = path
    return found


def task_manager(p: BenchmarksParams, suite: str | Path):
    """The harness's task index: the suite folder, and the harness's own tasks only when a task
    needs them (indexing its ~15,000 tasks takes seconds)."""
    from lm_eval.tasks import TaskManager

    hub = [t for t in p.tasks if t not in suite_tasks(suite)]
    return TaskManager(include_path=str(suite), include_defaults=bool(hub))


def loaded_tasks(p: BenchmarksParams, suite: str | Path) -> tuple:
    """The task index and each task built, its dataset loaded. A hub task needs its revision pinned; one that cannot
    load (offline, a wrong name) fails in one line naming it and how to get its data."""
    shipped = suite_tasks(suite)
    if unpinned := [t for t in p.tasks if t not in shipped and t not in p.revisions]:
        raise UserError(f"{PARAMS_FILE}: benchmarks.tasks {', '.join(unpinned)} read hub data; pin each dataset "
                        f"in benchmarks.revisions ({{task: <commit sha>}}), or list a task of {suite}/ "
                        f"({', '.join(shipped)})")
    manager = task_manager(p, suite)
    tasks = []
    for name in p.tasks:
        try:
            tasks += built(manager, name, p.revisions.get(name))
        except Exception as e:  # the harness and datasets raise many kinds; each is this one line
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise UserError(f"benchmarks: task {name} could not load ({type(e).__name__}: {first}). A hub task needs "
                            "its dataset once with the hub reachable (unset HF_HUB_OFFLINE/HF_DATASETS_OFFLINE, "
                            "then `dvc repro benchmarks`; it is cached after), or drop it from benchmarks.tasks") from None
    return manager, tasks


def built(manager, name: str, revision: str | None) -> list:
    """The harness's Task objects of one name (a group gives several), its dataset at `revision`."""
    loaded = manager.load([name] if revision is None else [pinned_config(manager, name, revision)])
    tasks = list(loaded["tasks"].values())
    if not tasks:
        raise KeyError(f"no task named {name}")
    return tasks


def pinned_config(manager, name: str, revision: str) -> dict:
    """A registered task's own config with its dataset pinned: the harness builds a task from a
    config dict as it is, so the pin goes into the whole config, not beside its name."""
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = manager._entry(name)  # the index entry: where the task's YAML is
    if entry is None or entry.yaml_path is None:
        raise KeyError(f"{name} is not a task defined by a YAML file; only those can be pinned")
    config = dict(load_yaml(entry.yaml_path, resolve_func=True))
    config["task"] = name
    config["dataset_kwargs"] = {**(config.get("dataset_kwargs") or {}), "revision": revision}
    return config


def harness_model(model_dir: str, dtype: str, batch_size: int, backend: str):
    """The harness's model: on transformers, the project's own load (the class its pin.json names, on
    evaluate's device) handed over as an object; on vLLM, the harness's vLLM model of the folder."""
    if backend == "vllm":  # the batch size is simple_evaluate's own argument: not here as well
        return "vllm", {"pretrained": model_dir, "dtype": dtype}
    from lm_eval.models.huggingface import HFLM

    from sft.device import inference_device
    from sft.models import load_folder

    model, tokenizer = load_folder(model_dir, dtype=dtype, device_map=inference_device())
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size), None


def run_harness(model, model_args, manager, tasks: list, p: BenchmarksParams) -> dict:
    """The harness's own evaluation; its seeds are its defaults, the same every run. Its report of
    the machine (torch's collect_env: `pip list`, lscpu and the like, 3-8 s on 2 cores) is not
    collected: it lands in a key this project never keeps, and nothing that varies by machine goes
    into a hashed output anyway."""
    from unittest import mock

    import lm_eval
    import lm_eval.evaluator

    with mock.patch.object(lm_eval.evaluator, "add_env_info", lambda storage: None):
        return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=tasks, task_manager=manager,
                                       num_fewshot=p.num_fewshot, apply_chat_template=p.apply_chat_template,
                                       limit=p.limit, batch_size=p.batch_size, log_samples=True,
                                       bootstrap_iters=1000)


def metric_key(metric: str, filter_name: str) -> str:
    """The harness's `metric,filter` key as this project names it: the metric alone for no filter."""
    return metric if filter_name == "none" else f"{metric},{filter_name}"


def task_figures(results: dict) -> dict:
    """Every task's figures from the harness's results: each metric, its standard error, the items
    scored, the shots and the task's version."""
    out = {}
    for task, row in sorted(results["results"].items()):
        figures = {}
        for key, value in row.items():
            if "," not in key or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            metric, filter_name = key.split(",", 1)
            figures[metric_key(metric, filter_name)] = round(float(value), 4)
        if not figures:
            continue  # a group's own row without figures of its own
        samples = results.get("n-samples", {}).get(task, {})
        figures["samples"] = samples.get("effective", row.get("sample_len"))
        figures["shots"] = results.get("n-shot", {}).get(task)
        figures["version"] = results.get("versions", {}).get(task)
        out[task] = figures
    return out


def settings(p: BenchmarksParams, backend: str, dtype: str) -> dict:
    """What makes a figure comparable with another: the harness and how it was asked."""
    return {"harness": f"lm-evaluation-harness {version('lm_eval')}", "apply_chat_template": p.apply_chat_template,
            "num_fewshot": p.num_fewshot, "limit": p.limit, "dtype": dtype, "backend": backend}


def details(results: dict) -> list[dict]:
    """Each item's outcomes, by task and the harness's doc id (with its hash, which pairing checks),
    every metric under its `metric[,filter]` key: the numbers each figure is the mean of. No
    log-likelihood is kept: its last bits follow the CPU; the outcome does not."""
    rows: dict[tuple[str, int], dict] = {}
    for task, samples in sorted(results.get("samples", {}).items()):
        for s in samples:
            row = rows.setdefault((task, s["doc_id"]), {"task": task, "doc_id": s["doc_id"], "doc_hash": s.get("doc_hash")})
            for metric in s.get("metrics", []):
                if isinstance(value := s.get(metric), bool | int | float):
                    row[metric_key(metric, s.get("filter", "none"))] = float(value)
    return [rows[k] for k in sorted(rows)]
