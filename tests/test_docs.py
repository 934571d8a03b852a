"""The README and docs/ as a newcomer reads them: the README stays a front door (at most 12 KB),
every page a link points at exists, and every fenced `make` and `dvc` command is one that runs
here: the target is in the Makefile, dvc's own parser takes the command, a `-S` param exists,
a preset or config named exists."""

import re
import shlex

import pytest
import yaml
from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(?:bash|sh|console|shell)?\n(.*?)```", re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def commands(page) -> list[tuple[str, ...]]:
    """Each `make` or `dvc` command of the page's fenced blocks, as the shell splits it (`a && b`
    and `a / b` are two)."""
    lines = [line for block in FENCE.findall(page.read_text(encoding="utf-8")) for line in block.splitlines()
             if re.match(r"\s*(make|dvc) ", line)]
    found = []
    for line in lines:
        command: list[str] = []
        for word in [*shlex.split(line, comments=True), "&&"]:
            if word in ("&&", "/"):
                if command[:1] in (["make"], ["dvc"]):
                    found.append(tuple(command))
                command = []
            else:
                command.append(word)
    return found


def all_commands() -> list[tuple[str, tuple[str, ...]]]:
    return [(page.name, command) for page in PAGES for command in commands(page)]


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


def test_the_readme_is_a_front_door():
    assert (ROOT / "README.md").stat().st_size <= 12_000
    assert len(all_commands()) >= 20  # the check below reads the pages' commands, not none


def broken_links(page) -> list[str]:
    """Relative link targets of the page that are not there (web addresses and anchors aside)."""
    return [target for target in LINK.findall(page.read_text(encoding="utf-8"))
            if not re.match(r"[a-z]+:", target) and not target.startswith("#")
            and not (page.parent / target.split("#")[0]).exists()]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_points_at_a_page_that_exists(page):
    assert broken_links(page) == [], f"{page.relative_to(ROOT)} links to pages that do not exist"


@pytest.mark.parametrize("page, words", all_commands(), ids=lambda x: " ".join(x) if isinstance(x, tuple) else x)
def test_every_command_in_the_docs_runs_here(page, words):
    command = " ".join(words)
    if words[0] == "make":
        assert words[1] in make_targets(), f"{page}: `{command}`: no such target in the Makefile"
        for setting in words[2:]:
            key, _, value = setting.partition("=")
            if key == "NAME" and words[1] in ("preset", "rehearse"):
                assert (ROOT / "presets" / f"{value}.yaml").is_file(), f"{page}: `{command}`: no preset {value}"
            elif key == "GRID":
                from apps.experiments import overrides

                overrides(value, yaml.safe_load((ROOT / "params.yaml").read_text()))  # a UserError names the word
            elif key == "ACCELERATE_CONFIG":
                assert (ROOT / value).is_file(), f"{page}: `{command}`: no file {value}"
        return
    from dvc.cli import DvcParserError
    from dvc.cli.parser import get_main_parser

    try:
        get_main_parser().parse_args(words[1:])
    except (SystemExit, DvcParserError):
        pytest.fail(f"{page}: `{command}`: dvc's parser refuses it")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for i, word in enumerate(words):
        if word == "-S":
            section, _, key = words[i + 1].partition("=")[0].partition(".")
            assert key in params.get(section, {}), f"{page}: `{command}`: params.yaml has no {section}.{key}"


def test_a_wrong_command_or_link_is_caught(tmp_path):
    """The control: a made-up link, target, dvc subcommand and param fail the checks above."""
    (tmp_path / "page.md").write_text("[ok](page.md), [gone](docs/gone.md), [web](https://example.org)\n")
    assert broken_links(tmp_path / "page.md") == ["docs/gone.md"]
    assert "reprod" not in make_targets()
    from dvc.cli import DvcParserError
    from dvc.cli.parser import get_main_parser

    with pytest.raises((SystemExit, DvcParserError)):
        get_main_parser().parse_args(["metrics", "compare"])
    assert "epochz" not in yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
