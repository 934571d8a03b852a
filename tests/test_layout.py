"""The folder listing is the architecture: stages/ holds exactly the stages of dvc.yaml, no stage
or benchmark imports a stage, and every stage's deps list exactly the project modules it imports
(transitively), so the hand-written deps cannot drift from the code."""

import pytest
import yaml
from conftest import ROOT

from tools.deps import code_deps, imported_names, listed_code_deps, rewritten

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


@pytest.mark.parametrize("path", sorted([*(ROOT / "stages").glob("*.py"), *(ROOT / "bench").glob("*.py"),
                                         *(ROOT / "tools").glob("*.py"),
                                         *(ROOT / "apps").glob("*.py"), *(ROOT / "sft").glob("*.py")]),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_stage(path):
    stages = {n for n in imported_names(path) if n == "stages" or n.startswith("stages.")}
    assert not stages, f"{path.relative_to(ROOT)} imports {sorted(stages)}; shared code belongs in sft/"


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
