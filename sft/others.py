"""The others section of params.yaml: other models as baselines, a hub model pinned by a commit or
a model folder, each under a name. Their evaluation is sft/baselines.py; this module imports
nothing heavier than params, so the card, which reads which others are current, runs none of it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sft.params import PARAMS_FILE, UserError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a file name on every system, and a DVC stage key
COMMIT = re.compile(r"[0-9a-f]{40}")
HUB_KEYS = ("model_name_or_path", "revision")


@dataclass
class OthersParams:
    hub: dict = field(default_factory=dict)  # name: {model_name_or_path: org/model, revision: <commit sha>}
    folders: dict = field(default_factory=dict)  # name: path of a model folder (a dependency of its stage)

    def __post_init__(self):
        where = f"{PARAMS_FILE}: others"
        for name, entry in self.hub.items():
            check_name(name, f"{where}.hub")
            if not isinstance(entry, dict) or set(entry) != set(HUB_KEYS) \
                    or not all(isinstance(entry[k], str) and entry[k] for k in HUB_KEYS):
                raise UserError(f"{where}.hub.{name} is {entry!r}; write {{model_name_or_path: org/model, "
                                "revision: <commit sha>}")
            if not COMMIT.fullmatch(entry["revision"]):
                raise UserError(f"{where}.hub.{name}.revision is {entry['revision']!r}; pin the 40-hex commit sha "
                                "(the model page's 'Files and versions', or HfApi().model_info(id).sha): a branch "
                                "moves, and DVC would keep the old figures")
        for name, path in self.folders.items():
            check_name(name, f"{where}.folders")
            if not isinstance(path, str) or not path:
                raise UserError(f"{where}.folders.{name} is {path!r}; write the path of a model folder")
        if both := sorted(set(self.hub) & set(self.folders)):
            raise UserError(f"{where}: {', '.join(both)} named in both hub and folders; every other model needs "
                            "a name of its own")


def check_name(name, where: str) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UserError(f"{where}: name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
                        "letter or digit (it names the stage and its files)")
