"""The folder listing is the architecture: stages/ holds exactly the stages of dvc.yaml, nothing
imports a stage (no test either: tests run a stage as `python -m` does), no module imports
itself round a circle, every stage's deps list exactly the project modules it imports
(transitively), so the hand-written deps cannot drift from the code, and a stage reads only its
own section of params.yaml (the exceptions below, each with its reason)."""

import ast
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from tools.deps import circles, closure, code_deps, import_graph, imported_names, launchers, listed_code_deps, rewritten

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_stages_folder_lists_exactly_the_dvc_stages():
    assert sorted(p.name for p in (ROOT / "stages").iterdir() if p.name != "__pycache__") == \
        sorted(f"{name}.py" for name in STAGES)
    for name, stage in STAGES.items():
        assert f"-m stages.{name} " in stage.get("do", stage)["cmd"].replace("\n", " ") + " "


def drift(name: str, stage: dict) -> tuple[list[str], list[str]]:
    """(modules the stage runs that its deps leave out, deps that are modules it does not run)."""
    wanted, listed = set(code_deps(name, stage)), set(listed_code_deps(stage))
    return sorted(wanted - listed), sorted(listed - wanted)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_deps_list_exactly_the_modules_the_stage_imports(name):
    missing, extra = drift(name, STAGES[name])
    assert (missing, extra) == ([], []), (f"dvc.yaml stage {name}: missing {missing}, not imported {extra}; "
                                          "run `make deps` (python -m tools.deps) to write them from the imports")


def test_drift_is_seen_both_ways():
    """The control: a module reached only through another (sft/device.py, via sft/models.py) left
    out of evaluate's deps, and a module evaluate never imports put in, are both reported."""
    deps = STAGES["evaluate"]["do"]["deps"]
    stage = {"deps": [d for d in deps if d != "sft/device.py"] + ["sft/training.py"]}
    assert drift("evaluate", stage) == (["sft/device.py"], ["sft/training.py"])


def test_make_deps_writes_exactly_what_the_check_asks_for_and_keeps_the_rest():
    """The writer's control: dvc.yaml with a module dropped from evaluate and one added to train
    comes back as it was, comments and all; the committed file is already what it writes."""
    text = (ROOT / "dvc.yaml").read_text()
    assert rewritten(text) == text
    broken = text.replace("        - sft/device.py\n", "", 1).replace("      - sft/consolidate.py\n",
                                                                       "      - sft/consolidate.py\n      - sft/card.py\n", 1)
    assert broken != text and rewritten(broken) == text


PROJECT = sorted([*(ROOT / "stages").glob("*.py"), *(ROOT / "bench").glob("*.py"), *(ROOT / "tools").glob("*.py"),
                  *(ROOT / "apps").glob("*.py"), *(ROOT / "sft").glob("*.py"), *(ROOT / "tests").glob("*.py"),
                  *(ROOT / "rehearsal").glob("*.py")])


def stage_imports(path: Path) -> set[str]:
    """The stage modules `path` imports: by an import statement, or by name through importlib."""
    names = set(imported_names(path))
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.add(str(node.args[0].value))
    return {n for n in names if n == "stages" or n.startswith("stages.")}


@pytest.mark.parametrize("path", PROJECT, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_stage(path):
    """A test runs a stage as `python -m stages.<name>` does (conftest.stage_main, or a
    subprocess); what it checks inside a stage lives in an sft/ module it imports instead."""
    stages = stage_imports(path)
    assert not stages, f"{path.relative_to(ROOT)} imports {sorted(stages)}; shared code belongs in sft/"


def test_a_stage_import_is_seen_however_it_is_written(tmp_path):
    """The control: each way a test could reach into a stage module is reported."""
    for line in ("from stages import select", "from stages.prepare import convert", "import stages.merge",
                 "importlib.import_module('stages.export')"):
        (tmp_path / "probe.py").write_text(f"import importlib\n{line}\n")
        assert stage_imports(tmp_path / "probe.py"), line
    (tmp_path / "probe.py").write_text("import runpy\nrunpy.run_module('stages.export')\n")
    assert not stage_imports(tmp_path / "probe.py")  # run as a program, as conftest.stage_main does


def project_graph() -> dict[str, set[str]]:
    return import_graph([p for p in PROJECT if p.parent.name in ("sft", "stages", "apps", "tools")])


def test_no_import_circle():
    assert circles(project_graph()) == [], "modules that import one another: move what both need to a module of its own"


def test_an_import_circle_is_seen():
    """The control: the circle this project had (sft/llamacpp.py took `throughput` from
    sft/generation.py, which imports llamacpp), put back, is reported; so is a longer one."""
    graph = project_graph()
    assert "sft/llamacpp.py" in graph["sft/generation.py"]
    graph["sft/llamacpp.py"] = graph["sft/llamacpp.py"] | {"sft/generation.py"}
    assert ["sft/generation.py", "sft/llamacpp.py"] in circles(graph)
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# A stage's own section: its name, but for the other-model stages, which read an entry of others:.
OWN = {"other_hub": "others", "other_folder": "others", "judge_hub": "judge", "judge_folder": "judge", "compare": None}
# The params a stage reads outside its own section, each for a reason.
BORROWED = {
    ("train", "launch"): "how the train stage is started (accelerate launch): more processes, a larger global batch",
    ("fewshot", "evaluate"): "it generates as evaluate does, so the baselines differ by the examples alone",
    ("other_hub", "evaluate"): "it generates as evaluate does, so every model is evaluated alike",
    ("other_folder", "evaluate"): "it generates as evaluate does, so every model is evaluated alike",
    # The card states the sources the run was given, which no output records (prepare, fewshot and
    # forgetting would have to write them, changing their bytes and rerunning all after them).
    ("card", "prepare.dataset"): "the datasets the run was prepared from",
    ("card", "prepare.subset"): "the datasets the run was prepared from",
    ("card", "prepare.revision"): "the datasets the run was prepared from",
    ("card", "prepare.datasets"): "the datasets of a mixture",
    ("card", "fewshot.shots"): "the few-shot baseline's label",
    ("card", "forgetting.dataset"): "the general-text line's dataset",
    ("card", "others"): "which other models are current: a removed one's figures stay on disk",
    ("card", "judge"): "which judges are current: a removed one's figures stay on disk",
}


def declared_params(stage: dict) -> list[str]:
    entries = stage.get("do", stage).get("params", [])
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def borrowed(name: str, stage: dict) -> list[str]:
    """The stage's params entries outside its own section that no reason allows."""
    own = OWN.get(name, name)
    return [e for e in declared_params(stage) if e.split(".")[0] != own and (name, e) not in BORROWED]


def sections_read(path: Path) -> dict[str | None, set[str]]:
    """The params sections a module reads by name (load("x", ...), read_section("x")), per function
    that reads them (None: at the top)."""
    found: dict[str | None, set[str]] = {}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))]:
        for node in ast.walk(scope):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in (
                    "load", "read_section") and node.args and isinstance(node.args[0], ast.Constant):
                found.setdefault(None if scope is tree else scope.name, set()).add(node.args[0].value)
    return found


def code_reads(name: str, stage: dict) -> set[str]:
    """The sections a stage's code reads: its module's own reads, its launcher's, and those of every
    project function it names (a helper in sft/ that reads a section)."""
    module = ROOT / "stages" / f"{name}.py"
    reads = set().union(*sections_read(module).values(), *(set().union(*sections_read(p).values())
                                                           for p in launchers(stage)))
    named = {n.id for n in ast.walk(ast.parse(module.read_text())) if isinstance(n, ast.Name)} | \
            {n.attr for n in ast.walk(ast.parse(module.read_text())) if isinstance(n, ast.Attribute)}
    for path in closure(module):
        for function, sections in sections_read(ROOT / path).items():
            if function in named and path != f"stages/{name}.py":
                reads |= sections
    return reads


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_stage_reads_only_its_own_params_section(name):
    stage = STAGES[name]
    assert borrowed(name, stage) == [], (f"dvc.yaml stage {name} reads {borrowed(name, stage)} of another stage's "
                                         "section: have that stage write what it decided as an output, and read that")
    declared = {e.split(".")[0] for e in declared_params(stage)}
    assert code_reads(name, stage) <= declared, f"stage {name} reads sections its params deps leave out"


def test_a_borrowed_section_is_seen():
    """The control: select and merge as they were (train.method in their params, read by
    sft/checkpoints.py), and a card that reads fewshot: without declaring it."""
    select = {**STAGES["select"], "params": [*STAGES["select"]["params"], "train.method"]}
    assert borrowed("select", select) == ["train.method"]
    card = STAGES["card"]
    undeclared = {**card, "do": {**card["do"], "params": [p for p in card["do"]["params"] if p != "fewshot.shots"]}}
    assert "fewshot" in code_reads("card", undeclared) - {e.split(".")[0] for e in declared_params(undeclared)}
    assert all(reason for reason in BORROWED.values())


@pytest.mark.parametrize("folder", ["raw", "general"])
def test_data_folders_hold_data_only(folder):
    """data/raw is a dep of prepare, data/general of forgetting: a script or a note in them would
    rerun the stage when edited (their provenance is in data/generate_*.py and docs/)."""
    assert not [p for p in (ROOT / "data" / folder).rglob("*") if p.suffix not in ("", ".jsonl", ".json", ".csv",
                                                                                  ".parquet")]


def test_every_registered_metric_has_its_evaluate_module():
    from sft.metrics import METRICS

    folders = {p.name for p in (ROOT / "task_metrics").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(METRICS), ("task_metrics/<name>/<name>.py links to ../task_metric.py for every "
                                     "metric of sft/metrics.py: ln -s ../task_metric.py task_metrics/<name>/<name>.py")
    for name in METRICS:
        link = ROOT / "task_metrics" / name / f"{name}.py"
        assert link.is_symlink() and link.resolve() == ROOT / "task_metrics" / "task_metric.py"


def test_the_merged_models_card_needs_no_export():
    """Without llama.cpp export fails; card@merged reads none of its outputs, so its card is still
    written (`dvc repro --keep-going`), and export reads nothing of the card's."""
    export, card = STAGES["export"], STAGES["card"]
    exported = {o if isinstance(o, str) else next(iter(o)) for o in export["outs"] + export["metrics"]}
    merged_deps = {d.replace("${item}", card["foreach"]["merged"]) for d in card["do"]["deps"]}
    assert not {d for d in merged_deps for o in exported if d == o or d.startswith(f"{o}/")}
    assert card["foreach"]["gguf"] in exported
    assert not {d for d in export["deps"] if d.startswith(("models/card", "metrics/")) or d == "sft/card.py"}
