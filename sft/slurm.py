"""The `slurm:` section of params.yaml and the sbatch scripts it fills in (configs/slurm/).

No stage reads the section: `make slurm-sweep`, `make slurm-seeds` and `make slurm-train`
(apps/slurm.py) do. Every value that reaches an `#SBATCH` line is checked here as what sbatch
takes (no space, quote or line break), so a value can only ever be that option's value; `setup`
lines are the user's own shell lines (module load, a virtual environment), one line each.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from sft.params import PARAMS_FILE, UserError, ranged

TEMPLATES = Path("configs/slurm")
# What an sbatch option's value is made of (a partition, an account, a time, a memory size, a
# constraint, a QOS): no space, quote, `#` or line break, so it can never end its line.
OPTION_VALUE = re.compile(r"[A-Za-z0-9_.:,=/@%+\[\]-]{1,200}")
OPTION = re.compile(r"--[a-z][a-z0-9-]{0,40}(=[A-Za-z0-9_.:,=/@%+\[\]-]{1,200})?")
REMOTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass
class SlurmParams:
    partition: str | None = None  # --partition (null: the cluster's default)
    account: str | None = None  # --account
    time: str = "04:00:00"  # --time of each task (and of the report)
    gpus_per_node: int = ranged(0, low=0)  # --gres=gpu:N
    cpus_per_task: int = ranged(2, low=1)  # --cpus-per-task, and the torch threads of each task's stages
    mem: str | None = None  # --mem (e.g. 32G; null: the partition's default)
    setup: list = field(default_factory=list)  # shell lines before each task: "module load cuda/12.4", ...
    options: list = field(default_factory=list)  # more sbatch options: "--qos=high", "--constraint=a100"
    git_remote: str = "origin"  # tasks clone the commit from it and push their experiments to it
    workdir: str = ".slurm"  # job scripts, logs and each task's clone: on a filesystem every node sees
    requeue: bool = True  # --requeue: a task whose node fails runs again and resumes from its checkpoints

    def __post_init__(self):
        where = f"{PARAMS_FILE}: slurm"
        for key in ("partition", "account", "time", "mem"):
            value = getattr(self, key)
            if value is not None and not OPTION_VALUE.fullmatch(str(value)):
                raise UserError(f"{where}.{key} is {str(value)[:60]!r}; an sbatch value has no spaces, quotes or "
                                "line breaks (e.g. partition: gpu, time: '04:00:00', mem: 32G)")
        for option in self.options:
            if not isinstance(option, str) or not OPTION.fullmatch(option):
                raise UserError(f"{where}.options: {str(option)[:60]!r} is not one sbatch option as --name or "
                                "--name=value (e.g. --qos=high, --constraint=a100)")
        for line in self.setup:
            if not isinstance(line, str) or not line.strip() or any(c in line for c in "\n\r\0"):
                raise UserError(f"{where}.setup: {str(line)[:60]!r} is not one shell line (each item is one line, "
                                "e.g. 'module load cuda/12.4')")
        if not REMOTE_NAME.fullmatch(self.git_remote):
            raise UserError(f"{where}.git_remote is {self.git_remote[:60]!r}; name a git remote (git remote -v)")
        if not self.workdir.strip() or any(c in self.workdir for c in "\n\r\0"):
            raise UserError(f"{where}.workdir is {self.workdir[:60]!r}; name a folder every node can read and write")


def sbatch_options(p: SlurmParams) -> list[str]:
    """The `#SBATCH` options every job of this project gets, from the section."""
    options = [f"--time={p.time}", f"--cpus-per-task={p.cpus_per_task}"]
    options += [f"--partition={p.partition}"] if p.partition else []
    options += [f"--account={p.account}"] if p.account else []
    options += [f"--mem={p.mem}"] if p.mem else []
    options += [f"--gres=gpu:{p.gpus_per_node}"] if p.gpus_per_node else []
    options += ["--requeue"] if p.requeue else ["--no-requeue"]
    return options + list(p.options)


def render(kind: str, values: dict, templates: Path = TEMPLATES) -> str:
    """configs/slurm/<kind>.sbatch filled in: jinja, every undefined name an error, `q` quotes a
    value for the shell."""
    import jinja2

    path = templates / f"{kind}.sbatch"
    if not path.is_file():
        raise UserError(f"{path} is missing: the job template (git checkout {path} brings back the shipped one)")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["q"] = lambda value: shlex.quote(str(value))
    try:
        return env.from_string(path.read_text(encoding="utf-8")).render(**values)
    except jinja2.TemplateError as e:
        raise UserError(f"{path}: {e}; the values it may use: {', '.join(sorted(values))}") from None
