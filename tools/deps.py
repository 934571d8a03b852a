"""dvc.yaml's code deps, generated from the imports (`make deps`): every stage lists its module and
every project module it runs, transitively, package __init__ files included, so an edit to any of
them reruns the stage and an edit elsewhere does not. tests/test_layout.py fails when they drift.

    python -m tools.deps          # rewrite the .py entries of each stage's deps in dvc.yaml
    python -m tools.deps --check  # exit 1, naming each stage that drifted
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sft", "stages", "apps")
DVC_YAML = ROOT / "dvc.yaml"


def module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    path = ROOT.joinpath(*parts)
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return path / "__init__.py" if (path / "__init__.py").is_file() else None


def imported_names(path: Path) -> set[str]:
    """Every name `path` imports, at the top or inside a function (both run when the stage does)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise SystemExit(f"{path}: relative import; the project imports absolutely")
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


def launchers(stage: dict) -> set[Path]:
    """Project modules the command runs before the stage module (`python -m sft.launch -m stages.train`)."""
    cmd = stage.get("do", stage).get("cmd", "")
    return {f for name in re.findall(r"python -m (sft\.\w+)", cmd) if (f := module_file(name))}


def code_deps(name: str, stage: dict) -> list[str]:
    """What the stage runs: its module first, then the others in path order (dvc.yaml's order)."""
    own = f"stages/{name}.py"
    runs = [ROOT / own, *launchers(stage)]
    return [own, *sorted(set().union(*(closure(path) for path in runs)) - {own})]


def listed_code_deps(stage: dict) -> list[str]:
    return [d for d in stage.get("do", stage)["deps"] if d.endswith(".py")]


def import_graph(paths: list[Path]) -> dict[str, set[str]]:
    """Each module's direct imports of project modules. Package __init__ files are left out: Python
    runs a package's __init__ before any module in it, so they close no circle."""
    return {str(p.relative_to(ROOT)): {str(f.relative_to(ROOT)) for f in direct_imports(p) if f.name != "__init__.py"}
            for p in paths if p.name != "__init__.py"}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle: the modules that reach one another through their imports (the strongly
    connected groups of the graph, Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1 or node in graph.get(node, ()):
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def drifted(text: str) -> dict[str, tuple[list[str], list[str]]]:
    """Per stage whose deps drifted: (modules it runs that are not listed, listed ones it does not run)."""
    out = {}
    for name, stage in yaml.safe_load(text)["stages"].items():
        wanted, listed = set(code_deps(name, stage)), set(listed_code_deps(stage))
        if wanted != listed:
            out[name] = (sorted(wanted - listed), sorted(listed - wanted))
    return out


def rewritten(text: str) -> str:
    """dvc.yaml with each stage's run of `- <file>.py` dep lines replaced by its generated list;
    comments and every other line are kept as they are."""
    stages = yaml.safe_load(text)["stages"]
    lines, out, stage = text.splitlines(keepends=True), [], None
    i = 0
    while i < len(lines):
        if (m := re.match(r"^  ([\w-]+):\s*$", lines[i])) and m.group(1) in stages:
            stage = m.group(1)
        if stage and (m := re.match(r"^(\s+)- \S+\.py\s*$", lines[i])):
            while i < len(lines) and re.match(r"^\s+- \S+\.py\s*$", lines[i]):
                i += 1
            out += [f"{m.group(1)}- {path}\n" for path in code_deps(stage, stages[stage])]
            stage = None  # one run of code deps a stage
            continue
        out.append(lines[i])
        i += 1
    return "".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description="Write dvc.yaml's code deps from the imports.")
    ap.add_argument("--check", action="store_true", help="only report drift (exit 1 if any)")
    args = ap.parse_args()
    text = DVC_YAML.read_text(encoding="utf-8")
    drift = drifted(text)
    if args.check:
        for name, (missing, extra) in drift.items():
            print(f"dvc.yaml stage {name}: missing {missing}, not imported {extra}")
        sys.exit(1 if drift else 0)
    new = rewritten(text)
    if new != text:
        DVC_YAML.write_text(new, encoding="utf-8")
    print(f"dvc.yaml: code deps of {len(drift)} stage(s) rewritten{': ' + ', '.join(drift) if drift else ''}")


if __name__ == "__main__":
    main()
