"""Every section of params.yaml, checked as its stage checks it, in one process, before DVC starts.

    python -m tools.params_check        # what `make repro` (and every make target that runs stages) runs first

DVC removes a stage's outputs before it runs the stage's command, so a bad value that its stage
refuses in one line still leaves the workspace without that stage's outputs until `dvc checkout`.
Checked here first, a bad value stops `make repro` with the same line and nothing removed.
"""

from __future__ import annotations

import time

from sft.params import PARAMS_FILE, from_dict, read_section, run


def section_classes() -> dict:
    """Each params.yaml section and the dataclass its stage reads it into (train: the project's own
    keys; its trainer arguments are checked by sft.training.load_params)."""
    from sft.basemodel import BaseParams
    from sft.benchmarks import BenchmarksParams
    from sft.card import CardParams
    from sft.evaluation import EvaluateParams
    from sft.exporting import ExportParams
    from sft.fewshot import FewShotParams
    from sft.forgetting import ForgettingParams
    from sft.judging import JudgeParams
    from sft.launch import LaunchParams
    from sft.merging import MergeParams
    from sft.others import OthersParams
    from sft.preparation import PrepareParams
    from sft.selection import SelectParams
    from sft.slurm import SlurmParams
    from sft.training import TrainParams

    return {"base": BaseParams, "prepare": PrepareParams, "launch": LaunchParams, "train": TrainParams,
            "select": SelectParams, "merge": MergeParams, "evaluate": EvaluateParams, "fewshot": FewShotParams,
            "forgetting": ForgettingParams, "benchmarks": BenchmarksParams, "judge": JudgeParams,
            "others": OthersParams,
            "export": ExportParams,
            "card": CardParams, "slurm": SlurmParams}


def check(path: str = PARAMS_FILE) -> list[str]:
    """The sections checked; the first bad value raises a UserError naming its key."""
    from sft.launch import distributed_type
    from sft.training import load_params

    classes = section_classes()
    for section, cls in classes.items():
        if section == "train":
            load_params(path, announce=False)
        else:
            values = from_dict(cls, read_section(section, path), f"{path}: {section}")
            if section == "launch":
                distributed_type(values.config_file)
    return list(classes)


def main() -> None:
    started = time.perf_counter()
    sections = check()
    print(f"[params] {PARAMS_FILE}: {len(sections)} sections checked in {time.perf_counter() - started:.1f} s",
          flush=True)


if __name__ == "__main__":
    run(main)
