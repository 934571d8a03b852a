"""The judge section of params.yaml: an LLM as judge of the test replies, a hub model pinned by a
commit or a model folder, each under a name, and how it is asked. The judging itself is
sft/verdicts.py; the card, which reads which judges are current, imports this module and none of
the judging code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sft.models import DTYPES
from sft.others import COMMIT, HUB_KEYS, check_name
from sft.params import PARAMS_FILE, UserError, one_of, ranged

MODES = ("pairwise", "score")
BACKENDS = ("auto", "transformers", "vllm")


@dataclass
class JudgeParams:
    hub: dict = field(default_factory=dict)  # name: {model_name_or_path: org/model, revision: <commit sha>}
    folders: dict = field(default_factory=dict)  # name: a model folder (a dependency of its stage)
    rubric: str = "prompts/sql/judge.jinja"  # the judge's prompt: prompts/<dataset>/judge.jinja
    mode: str = "pairwise"  # pairwise | score
    max_items: int | None = ranged(None, low=1)  # test items judged, the first ones (null: all)
    max_new_tokens: int = ranged(128, low=1)  # the judge's reply: its reasoning, then the verdict
    batch_size: int = ranged(8, low=1)
    dtype: str = "float32"
    backend: str = "auto"  # vLLM on a CUDA GPU with vllm installed, else transformers

    def __post_init__(self):
        where = f"{PARAMS_FILE}: judge"
        one_of("judge", "mode", self.mode, MODES)
        one_of("judge", "dtype", self.dtype, DTYPES)
        one_of("judge", "backend", self.backend, BACKENDS)
        for name, entry in self.hub.items():
            check_name(name, f"{where}.hub")
            if not isinstance(entry, dict) or set(entry) != set(HUB_KEYS) \
                    or not all(isinstance(entry[k], str) and entry[k] for k in HUB_KEYS):
                raise UserError(f"{where}.hub.{name} is {entry!r}; write {{model_name_or_path: org/model, "
                                "revision: <commit sha>}")
            if not COMMIT.fullmatch(entry["revision"]):
                raise UserError(f"{where}.hub.{name}.revision is {entry['revision']!r}; pin the 40-hex commit sha: "
                                "a branch moves, and DVC would keep the old verdicts")
        for name, path in self.folders.items():
            check_name(name, f"{where}.folders")
            if not isinstance(path, str) or not path:
                raise UserError(f"{where}.folders.{name} is {path!r}; write the path of a model folder")
        if both := sorted(set(self.hub) & set(self.folders)):
            raise UserError(f"{where}: {', '.join(both)} named in both hub and folders; give each judge its own name")
