"""The folder listing is the architecture: stages/ holds exactly the stages of dvc.yaml, no stage
or benchmark imports a stage, and every stage's deps list exactly the project modules it imports
(transitively), so the hand-written deps cannot drift from the code."""

import ast
import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

PACKAGES = ("sft", "stages", "apps")
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    path = ROOT.joinpath(*parts)
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return path / "__init__.py" if (path / "__init__.py").is_file() else None


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; the project imports absolutely"
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


def direct_imports(path: Path) -> set[Path]:
    """Project files `path` imports, with the package __init__ files Python runs on the way."""
    found = set()
    for name in imported_names(path):
        parts = name.split(".")
        found |= {f for i in range(1, len(parts) + 1) if (f := module_file(".".join(parts[:i])))}
    return found


def closure(path: Path) -> set[str]:
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(direct_imports(current))
    return {str(p.relative_to(ROOT)) for p in seen}


def code_deps(stage: dict) -> set[str]:
    body = stage.get("do", stage)
    return {d for d in body["deps"] if d.endswith(".py")}


def test_stages_folder_lists_exactly_the_dvc_stages():
    assert sorted(p.name for p in (ROOT / "stages").iterdir() if p.name != "__pycache__") == \
        sorted(f"{name}.py" for name in STAGES)
    for name, stage in STAGES.items():
        assert f"-m stages.{name} " in stage.get("do", stage)["cmd"].replace("\n", " ") + " "


def launchers(stage: dict) -> set[Path]:
    """Project modules the command runs before the stage module (`python -m sft.launch -m stages.train`)."""
    cmd = stage.get("do", stage).get("cmd", "")
    return {f for name in re.findall(r"python -m (sft\.\w+)", cmd) if (f := module_file(name))}


def drift(name: str, stage: dict) -> tuple[list[str], list[str]]:
    """(modules the stage runs that its deps leave out, deps that are modules it does not run)."""
    runs = [ROOT / "stages" / f"{name}.py", *launchers(stage)]
    imported, listed = set().union(*(closure(path) for path in runs)), code_deps(stage)
    return sorted(imported - listed), sorted(listed - imported)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_deps_list_exactly_the_modules_the_stage_imports(name):
    missing, extra = drift(name, STAGES[name])
    assert (missing, extra) == ([], []), f"dvc.yaml stage {name}: missing {missing}, not imported {extra}"


def test_drift_is_seen_both_ways():
    """The control: a module reached only through another (sft/device.py, via sft/models.py) left
    out of evaluate's deps, and a module evaluate never imports put in, are both reported."""
    deps = STAGES["evaluate"]["do"]["deps"]
    stage = {"deps": [d for d in deps if d != "sft/device.py"] + ["sft/training.py"]}
    assert drift("evaluate", stage) == (["sft/device.py"], ["sft/training.py"])


@pytest.mark.parametrize("path", sorted([*(ROOT / "stages").glob("*.py"), *(ROOT / "bench").glob("*.py"),
                                         *(ROOT / "apps").glob("*.py"), *(ROOT / "sft").glob("*.py")]),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_stage(path):
    stages = {n for n in imported_names(path) if n == "stages" or n.startswith("stages.")}
    assert not stages, f"{path.relative_to(ROOT)} imports {sorted(stages)}; shared code belongs in sft/"


def test_raw_data_folders_hold_data_only():
    """data/raw is a dep of prepare: a script in it would rerun the whole graph when edited."""
    assert not [p for p in (ROOT / "data" / "raw").rglob("*") if p.suffix not in ("", ".jsonl", ".json", ".csv",
                                                                                 ".parquet")]


def test_every_registered_metric_has_its_evaluate_module():
    from sft.metrics import METRICS

    folders = {p.name for p in (ROOT / "task_metrics").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(METRICS), ("task_metrics/<name>/<name>.py links to ../task_metric.py for every "
                                     "metric of sft/metrics.py: ln -s ../task_metric.py task_metrics/<name>/<name>.py")
    for name in METRICS:
        link = ROOT / "task_metrics" / name / f"{name}.py"
        assert link.is_symlink() and link.resolve() == ROOT / "task_metrics" / "task_metric.py"
