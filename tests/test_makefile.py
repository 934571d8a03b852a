"""The Makefile's user variables as an attacker writes them: each reaches the program as one
argument (checked there), never as shell text, so no value runs a command or names a path."""

import subprocess
import sys

import pytest
from conftest import ROOT

PLANTED = "touch {marker}"


def make(*words: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-o", "setup", f"VENV={sys.prefix}", *words], cwd=cwd, text=True,
                          capture_output=True, timeout=120)


@pytest.mark.parametrize("target, variable, template", [
    ("rehearse", "NAME", "tiny; {cmd}; false"),
    ("rehearse", "NAME", "$({cmd})"),
    ("preset", "NAME", "tiny`{cmd}`"),
    ("preset", "NAME", "x' ; {cmd} ; echo '"),
    ("sweep", "GRID", 'train.epochs=1"; {cmd}; echo "'),
    ("sweep", "JOBS", "1; {cmd}"),
    ("sweep-report", "NAME", "sweep-1; {cmd}"),
    ("sweep-report", "PULL", "origin; {cmd}"),
    ("seeds", "N", "2 && {cmd}"),
    ("train-machine", "RANK", "1 || {cmd}"),
    ("serve", "SERVED_NAME", "local; {cmd}"),
    ("serve", "MODEL", "models/merged; {cmd}"),
])
def test_a_make_variable_never_runs_as_a_command(tmp_path, target, variable, template):
    marker = tmp_path / "planted"
    done = make(target, f"{variable}={template.format(cmd=PLANTED.format(marker=marker))}")
    assert not marker.exists(), done.stdout + done.stderr
    assert done.returncode != 0  # and the program said why
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("target", ["rehearse", "preset"])
@pytest.mark.parametrize("name", ["../presets/headnotes", "/etc/passwd", "", "-h", "tiny.yaml", "tiny/"])
def test_a_preset_name_that_is_a_path_or_no_preset_is_one_line(target, name):
    before = (ROOT / "params.yaml").read_bytes()
    done = make(target, f"NAME={name}")
    assert done.returncode == 2 and "NAME must be one of: headnotes medqa text-to-sql tiny" in done.stdout
    assert (ROOT / "params.yaml").read_bytes() == before


@pytest.mark.parametrize("name", ["../../outside", "sweep-1/../../x", "/tmp/x", "..", ".hidden"])
def test_a_report_name_that_is_a_path_is_refused_before_anything_is_written(tmp_path, name):
    done = subprocess.run([sys.executable, "-m", "apps.experiments", "report", name], cwd=ROOT, text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 2 and "is no sweep or seeds run" in done.stderr and "Traceback" not in done.stderr


def test_sweep_report_passes_as_only_when_given():
    """GNU make defines AS=as itself, which once became `--as as` on every call."""
    plain = make("-n", "sweep-report", "NAME=sweep-1").stdout
    assert "report" in plain and "--as" not in plain
    assert '--as "$SFT_AS"' in make("-n", "sweep-report", "NAME=sweep-1", "AS=seeds").stdout
