"""Start a stage under `accelerate launch` as the `launch:` section of params.yaml says.

    python -m sft.launch -m stages.train --model models/base ...

The keys become accelerate's own flags (`--config_file`, `--num_processes`, `--num_machines`,
`--machine_rank`, `--main_process_ip`, `--main_process_port`). Several processes or machines
with a one-process config (distributed_type NO) mean DDP (`--multi_gpu`); FSDP and DeepSpeed
configs keep their own type. Without a CUDA GPU the processes run on the CPU over gloo
(ACCELERATE_USE_CPU, one thread each), so `dvc exp run -S launch.num_processes=2` trains DDP here
as it does on a machine with GPUs. The keys are params of the train stage (dvc.lock, `dvc exp
show`): changing the number of processes changes the global batch, so it reruns training.

On the other machines of a several-machine run, `python -m sft.launch --machine-rank R` (what
`make train-machine RANK=R` runs) starts the train stage's command of dvc.yaml outside DVC with
that machine's rank: machine 0 runs `dvc repro train`, and only it writes the outputs and
dvc.lock. Every machine has the same commit, params and data.

The stage's own params are checked here first, so a bad value is one line before any process
starts; accelerate runs in this process, so a child's failure ends the launch with the child's
exit status and its one line, not under the launcher's traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from sft.device import has_cuda
from sft.params import UserError, load, ranged, read_yaml, run


@dataclass
class LaunchParams:
    config_file: str = "configs/accelerate/single.yaml"  # multi_gpu, fsdp, deepspeed_zero3 beside it
    num_processes: int = 1  # on this machine: one per GPU, or CPU processes over gloo without one
    num_machines: int = 1
    machine_rank: int = 0  # this machine's rank: 0 on the main one
    main_process_ip: str | None = None  # the main machine's address, for num_machines > 1
    main_process_port: int | None = ranged(None, low=1, high=65535)  # its port (accelerate's default: 29500)

    def __post_init__(self):
        if self.num_processes < 1 or self.num_machines < 1:
            raise UserError("params.yaml: launch.num_processes and launch.num_machines must be at least 1")
        if not 0 <= self.machine_rank < self.num_machines:
            raise UserError(f"params.yaml: launch.machine_rank {self.machine_rank} must be in 0.."
                            f"{self.num_machines - 1} (num_machines {self.num_machines})")
        if self.num_machines > 1 and not self.main_process_ip:
            raise UserError("params.yaml: launch.main_process_ip is needed with num_machines > 1: the address of "
                            "the machine with machine_rank 0")


def distributed_type(config_file: str) -> str:
    path = Path(config_file)
    if not path.is_file():
        raise UserError(f"params.yaml: launch.config_file {config_file} does not exist (see configs/accelerate/)")
    config = read_yaml(path) or {}
    if not isinstance(config, dict):
        raise UserError(f"{path}: an accelerate config must be a mapping of keys (see configs/accelerate/)")
    return str(config.get("distributed_type", "NO"))


def command(p: LaunchParams, cuda: bool, stage: list[str]) -> tuple[list[str], dict[str, str]]:
    """accelerate's argv and the environment it needs, for `stage` (e.g. ["-m", "stages.train", ...])."""
    argv = ["accelerate", "launch", "--config_file", p.config_file, "--num_processes", str(p.num_processes),
            "--num_machines", str(p.num_machines), "--machine_rank", str(p.machine_rank)]
    if p.main_process_ip:
        argv += ["--main_process_ip", p.main_process_ip]
    if p.main_process_port:
        argv += ["--main_process_port", str(p.main_process_port)]
    several = p.num_processes > 1 or p.num_machines > 1
    kind = distributed_type(p.config_file)  # read for one process too: a missing file is one line, not a traceback
    if kind == "NO" and several:
        argv.append("--multi_gpu")  # DDP: one process a GPU, or CPU processes over gloo
    env = {}
    if not several and cuda:
        # One process sees one GPU: on a machine with several, transformers' Trainer would wrap the
        # model in DataParallel over all of them (which a 4-bit model does not survive) and count
        # the global batch wrong. The first of the GPUs the user made visible, else GPU 0.
        env = {"CUDA_VISIBLE_DEVICES": (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]}
    if several and not cuda:
        env = {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
        print(f"[launch] no CUDA GPU: {p.num_processes} processes on the CPU over gloo, one thread each", flush=True)
        if kind not in ("NO", "MULTI_GPU"):
            # accelerate turns any distributed type into MULTI_CPU when it runs on the CPU.
            print(f"[launch] no CUDA GPU: {kind} ({p.config_file}) runs as plain DDP on the CPU: nothing is "
                  "sharded", flush=True)
    return argv + stage, env


def check_stage_params(stage: list[str]) -> None:
    """The train stage's params, checked here before any process starts (the one stage launched)."""
    if "-m" in stage[:-1] and stage[stage.index("-m") + 1] == "stages.train":
        from sft.training import load_params

        load_params(announce=False)


def exit_status(argv: list[str]) -> int:
    """accelerate launch, in this process; the children's exit status, without its traceback."""
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    try:
        launch_command(launch_command_parser().parse_args(argv[2:]))
    except subprocess.CalledProcessError as e:
        return e.returncode
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        print(f"[launch] process {rank} ended with exit status {failure.exitcode} (its error is above)",
              file=sys.stderr, flush=True)
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0


def train_stage() -> list[str]:
    """The train stage's command in dvc.yaml, after `python -m sft.launch`."""
    words = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]["train"]["cmd"].split()
    return words[words.index("sft.launch") + 1:]


def another_machine(p: LaunchParams, args: list[str]) -> tuple[LaunchParams, list[str]]:
    """`--machine-rank R` (and no stage given): this machine's rank in params, and the train stage's command."""
    rank = args[1] if len(args) == 2 else ""
    if not rank.isdigit() or not 0 < int(rank) < p.num_machines:
        raise UserError(f"--machine-rank takes one machine's rank, 1..{p.num_machines - 1} (launch.num_machines "
                        f"{p.num_machines}; machine 0 runs `dvc repro train`): make train-machine RANK=1")
    return LaunchParams(**{**p.__dict__, "machine_rank": int(rank)}), train_stage()


def main() -> None:
    p = load("launch", LaunchParams)
    stage = sys.argv[1:]
    if stage[:1] == ["--machine-rank"]:
        p, stage = another_machine(p, stage)
        print(f"[launch] machine {p.machine_rank} of {p.num_machines}: the train stage, outside DVC (machine 0 "
              "writes the outputs and dvc.lock)", flush=True)
    check_stage_params(stage)
    argv, env = command(p, has_cuda(), stage)
    print(f"[launch] {' '.join(argv)}", flush=True)
    os.environ.update(env)
    sys.exit(exit_status(argv))


if __name__ == "__main__":
    run(main)
