"""sft.launch: the `launch:` section as accelerate's flags; several processes mean DDP, over gloo
on a CPU; bad multi-machine settings are one clear line."""

import os

import pytest

from sft.launch import LaunchParams, command
from sft.params import UserError

SINGLE = "configs/accelerate/single.yaml"
STAGE = ["-m", "stages.train", "--out", "models/train"]


def test_one_process_is_plain_accelerate(monkeypatch, capsys):
    from conftest import ROOT

    monkeypatch.chdir(ROOT)
    argv, env = command(LaunchParams(), cuda=False, stage=STAGE)
    assert argv == ["accelerate", "launch", "--config_file", SINGLE, "--num_processes", "1", "--num_machines", "1",
                    "--machine_rank", "0", *STAGE]
    assert env == {} and capsys.readouterr().out == ""


def test_two_processes_on_a_cpu_are_ddp_over_gloo(monkeypatch):
    from conftest import ROOT

    monkeypatch.chdir(ROOT)
    argv, env = command(LaunchParams(num_processes=2), cuda=False, stage=STAGE)
    assert "--multi_gpu" in argv and argv[argv.index("--num_processes") + 1] == "2"
    assert env == {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    argv, env = command(LaunchParams(num_processes=2), cuda=True, stage=STAGE)
    assert "--multi_gpu" in argv and env == {}  # one process a GPU
    # An FSDP config keeps its own distributed type: no --multi_gpu on top of it.
    argv, _ = command(LaunchParams(config_file="configs/accelerate/fsdp.yaml", num_processes=2), True, STAGE)
    assert "--multi_gpu" not in argv


def test_fsdp_on_a_cpu_says_it_runs_as_ddp(monkeypatch, capsys):
    """accelerate runs every distributed type as MULTI_CPU on a CPU (seen with accelerate 1.15):
    the launch says so rather than let a user believe the model was sharded."""
    from conftest import ROOT

    monkeypatch.chdir(ROOT)
    command(LaunchParams(config_file="configs/accelerate/fsdp.yaml", num_processes=2), cuda=False, stage=STAGE)
    assert "FSDP (configs/accelerate/fsdp.yaml) runs as plain DDP on the CPU: nothing is sharded" in \
        capsys.readouterr().out


def test_fsdp_checkpoints_are_saved_whole():
    """select and merge read checkpoints with from_pretrained, which a sharded FSDP state dict is not."""
    import yaml
    from conftest import ROOT

    config = yaml.safe_load((ROOT / "configs" / "accelerate" / "fsdp.yaml").read_text())
    assert config["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_another_machine_runs_the_train_stage_of_dvc_yaml_with_its_own_rank(monkeypatch):
    import yaml
    from conftest import ROOT

    from sft.launch import another_machine

    monkeypatch.chdir(ROOT)
    p = LaunchParams(num_processes=3, num_machines=3, main_process_ip="10.0.0.1")
    mine, stage = another_machine(p, ["--machine-rank", "2"])
    assert mine.machine_rank == 2 and mine.num_machines == 3 and p.machine_rank == 0
    cmd = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]["cmd"]
    assert stage[:2] == ["-m", "stages.train"] and " ".join(stage) in " ".join(cmd.split())
    for bad in (["--machine-rank", "0"], ["--machine-rank", "3"], ["--machine-rank", "x"], ["--machine-rank"]):
        with pytest.raises(UserError, match=r"--machine-rank takes one machine's rank, 1..2 .*RANK=1"):
            another_machine(p, bad)


def test_several_machines(monkeypatch):
    from conftest import ROOT

    monkeypatch.chdir(ROOT)
    p = LaunchParams(num_processes=8, num_machines=2, machine_rank=1, main_process_ip="10.0.0.1",
                     main_process_port=29501)
    argv, _ = command(p, cuda=True, stage=STAGE)
    assert argv[argv.index("--machine_rank") + 1] == "1"
    assert argv[argv.index("--main_process_ip") + 1] == "10.0.0.1" and "29501" in argv
    with pytest.raises(UserError, match="launch.main_process_ip is needed with num_machines > 1"):
        LaunchParams(num_machines=2)
    with pytest.raises(UserError, match=r"launch.machine_rank 2 must be in 0..1"):
        LaunchParams(num_machines=2, machine_rank=2, main_process_ip="10.0.0.1")
    for processes in (1, 2):  # one process reads the file too: accelerate's traceback otherwise
        with pytest.raises(UserError, match="launch.config_file configs/nope.yaml does not exist"):
            command(LaunchParams(config_file="configs/nope.yaml", num_processes=processes), True, STAGE)


def test_a_failing_stage_ends_the_launch_with_its_one_line_and_status_not_a_traceback(tmp_path, tiny_model_dir):
    """accelerate's launcher re-raises a child's failure as CalledProcessError with a traceback
    under the child's one-line error; the launch ends with the child's own line and exit status."""
    import subprocess
    import sys

    from conftest import ROOT, git_workdir, prepared

    work = git_workdir(tmp_path / "work")
    prepared(work / "data")  # the records, not the tokens prepare hands to train
    (work / "configs").symlink_to(ROOT / "configs")
    # train's own section is fine (checked before accelerate starts); the child then reads
    # data/tokens.json, which is missing: a UserError in the child.
    (work / "params.yaml").write_text("launch:\n  num_processes: 1\ntrain:\n  epochs: 1\n")
    done = subprocess.run([sys.executable, "-m", "sft.launch", "-m", "stages.train", "--model", str(tiny_model_dir),
                           "--data", "data", "--out", "out", "--metrics", "m.json", "--live", "live"],
                          cwd=work, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "CalledProcessError" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == ("error: data/tokens.json is missing; run the prepare stage "
                                                    "first (dvc repro prepare)")
    assert not (work / "out").exists() and not (work / "m.json").exists()


def test_one_process_on_a_machine_with_several_gpus_sees_one(monkeypatch):
    """Without it the Trainer wraps the model in DataParallel over every GPU it sees."""
    from conftest import ROOT

    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert command(LaunchParams(), cuda=True, stage=STAGE)[1] == {"CUDA_VISIBLE_DEVICES": "0"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # the user's choice is kept: its first GPU
    assert command(LaunchParams(), cuda=True, stage=STAGE)[1] == {"CUDA_VISIBLE_DEVICES": "2"}
    assert "CUDA_VISIBLE_DEVICES" not in command(LaunchParams(num_processes=2), cuda=True, stage=STAGE)[1]
    assert command(LaunchParams(), cuda=False, stage=STAGE)[1] == {}
