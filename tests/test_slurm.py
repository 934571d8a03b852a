"""make slurm-sweep and make slurm-train against a real Slurm cluster on loopback (Debian's
slurm-wlm and munge: one slurmctld, two slurmd nodes of one CPU each; tests/loopback_slurm.py),
from a team repository: a bare git remote and a DVC remote folder holding the tiny run's
run-cache, as a cluster's shared filesystem would."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SWEEP_GRID, copy_repository, dvc, edit, run_copy
from loopback_slurm import Cluster, missing

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if gone := missing():
        pytest.skip(f"no Slurm here ({', '.join(gone)} missing): apt-get install slurm-wlm munge")
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def team(tiny_run, tmp_path_factory) -> tuple[Path, Path]:
    """The finished tiny run, committed with its lock, on a bare git remote and a DVC remote folder."""
    root = tmp_path_factory.mktemp("slurm-team")
    origin = root / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    repo = run_copy(tiny_run, root / "repo")
    dvc(repo, "remote", "add", "-d", "store", str(root / "dvc-store"))
    edit(repo, lambda p: p["slurm"].update(cpus_per_task=1))  # the loopback nodes have one CPU each
    git(repo, "add", ".dvc/config", "dvc.lock", "metrics/speed", "params.yaml")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "team repository")
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "HEAD:main")
    git(repo, "branch", "-q", "-u", "origin/main")
    dvc(repo, "push", "--run-cache")
    return repo, origin


def make(repo: Path, cluster: Cluster, *args: str, timeout: float = 300) -> str:
    env = {k: v for k, v in cluster.env.items() if k not in ("MAKEFLAGS", "MFLAGS")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    done = subprocess.run(["make", *args, f"VENV={sys.prefix}", "-o", "setup"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def submitted(said: str) -> tuple[str | None, str]:
    array = re.search(r"submitted job array (\d+)", said)
    return (array.group(1) if array else None), re.search(r"submitted the report (\d+)", said).group(1)


def rows(report: Path) -> dict:
    """Each experiment of a sweep report by its grid value: state and validation loss."""
    table = json.loads(report.read_text())
    return {r["train.epochs"]: (r["state"], r["eval_loss"]) for r in table["rows"]}


def test_a_sweep_as_a_job_array_survives_a_killed_task_and_ranks_as_the_local_sweep(team, cluster, local_sweep):
    """`make slurm-sweep` of a 3-experiment grid over both nodes, one task cancelled mid-run: its
    report lists it (and the one train refuses) as failed, with their logs. Submitted again, only
    those run; the finished one is not trained again, and the report ranks the same experiments
    with the same figures as a local `make sweep` of the same grid."""
    from apps.experiments import grid_name

    repo, _ = team
    said = make(repo, cluster, "slurm-sweep", f"GRID={SWEEP_GRID}")
    name = grid_name(SWEEP_GRID.split())
    assert f"{name}: 3 experiments" in said and "0 already pushed to origin, 3 to run" in said
    assert "#SBATCH --array=1,2,3" in said and "#SBATCH --cpus-per-task=1" in said  # the script, printed
    array, report_job = submitted(said)
    # place 1 is 1 epoch: cancelled once its training has started
    logs = repo / ".slurm" / name / "logs"
    log = logs / f"{name}-{array}_1.out"
    deadline = time.time() + 300
    while time.time() < deadline and "Running stage 'train'" not in (log.read_text() if log.is_file() else ""):
        time.sleep(0.5)
    cluster.run("scancel", f"{array}_1")
    cluster.wait(report_job)
    states = cluster.state(array)
    assert states[f"{array}_1"] == "CANCELLED" and states[f"{array}_2"] == "COMPLETED", states
    assert states[f"{array}_3"] == "FAILED", states
    assert f"{name}-3 failed: dvc exp run exited with" in (logs / f"{name}-{array}_3.out").read_text()
    first = rows(repo / "reports" / name / "report.json")
    assert first[2][0] == "success" and [first[k][0] for k in (1, 0)] == ["failed"] * 2
    assert f"{name}-1 left no result: its log {logs}/{name}-{array}_1.out" in (repo / "reports" / name / "report.md").read_text()

    again = make(repo, cluster, "slurm-sweep", f"GRID={SWEEP_GRID}")
    assert "1 already pushed to origin, 2 to run" in again and "#SBATCH --array=1,3" in again
    array2, report2 = submitted(again)
    cluster.wait(report2)
    assert "reusing" in (logs / f"{name}-{array2}_1.out").read_text()  # the cancelled task's own clone
    assert not list(logs.glob(f"{name}-{array2}_2.out"))  # the finished experiment: not run again
    ours, local = rows(repo / "reports" / name / "report.json"), rows(local_sweep / "reports" / "sweep-1" / "report.json")
    assert ours == local, (ours, local)
    assert [k for k, v in ours.items() if v[0] == "success"] == [k for k, v in local.items() if v[0] == "success"]

    # By hand afterwards, as the user would: the report again, pulled from the remote.
    by_hand = make(repo, cluster, "sweep-report", f"NAME={name}", "PULL=origin")
    assert f"{name}-1" in by_hand and f"{name}-2" in by_hand


def test_slurm_train_over_two_nodes_ends_where_two_processes_on_one_machine_end(team, cluster, two_process_run, tmp_path):
    """`make slurm-train NODES=2`: one launcher a node, ranks from SLURM_NODEID, gloo between
    them; world size 2, and the validation loss of `make train-multi NPROC=2` on one machine."""
    repo = run_copy(team[0], tmp_path / "nodes")
    said = make(repo, cluster, "slurm-train", "NODES=2")
    job = re.search(r"submitted (\d+): 2 nodes x 1 processes", said).group(1)
    cluster.wait(job, timeout=600)
    log = (repo / ".slurm" / "train" / "logs" / f"train-{job}.out").read_text()
    assert cluster.state(job)[job] == "COMPLETED", log[-3000:]
    assert "[slurm] node 0 (n1): -m dvc exp run train" in log and "[slurm] node 1 (n2): -m sft.launch --machine-rank 1" in log
    metrics = json.loads((repo / "metrics" / "train.json").read_text())
    assert metrics["world_size"] == 2
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train"]["params"]["params.yaml"]["launch"]
    assert lock["num_machines"] == 2 and lock["main_process_ip"] == "127.0.0.1"

    alone = json.loads((two_process_run[0] / "metrics" / "train.json").read_text())  # make train-multi NPROC=2
    assert alone["world_size"] == 2 and alone["global_step"] == metrics["global_step"]
    assert alone["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-6)


def test_the_job_script_holds_only_checked_values(tmp_path, monkeypatch):
    """Every value from params or make's line reaches an #SBATCH line as one value, never a second
    line or a command; a template naming an unknown value is one clear error."""
    from sft.params import UserError, from_dict
    from sft.slurm import SlurmParams, render, sbatch_options

    for key, bad in (("partition", "gpu\n#SBATCH --uid=0"), ("time", "1:00 ; rm -rf ~"), ("mem", "$(id)"),
                     ("account", "a b"), ("options", ["--qos=high --uid=0"]), ("options", ["-x"]),
                     ("setup", ["module load x\nrm -rf /"]), ("git_remote", "../other"), ("workdir", "a\nb")):
        with pytest.raises(UserError, match=f"slurm.{key}"):
            from_dict(SlurmParams, {key: bad}, "params.yaml: slurm")
    p = from_dict(SlurmParams, {"partition": "gpu", "gpus_per_node": 4, "options": ["--qos=high"],
                                "setup": ["module load cuda/12.4"]}, "params.yaml: slurm")
    values = {"name": "sweep-1", "array": "1,2", "logs": "/shared/l o g s", "options": sbatch_options(p),
              "setup": p.setup, "venv": "/v env/bin", "repo": "/r", "plan": "/p/plan.json"}
    script = render("sweep", values, ROOT / "configs" / "slurm")
    assert "#SBATCH --partition=gpu\n" in script and "#SBATCH --gres=gpu:4\n" in script and "#SBATCH --qos=high\n" in script
    assert "\nmodule load cuda/12.4\n" in script and "export PATH='/v env/bin':" in script
    (tmp_path / "sweep.sbatch").write_text("#SBATCH --x={{ nodes }}\n")
    with pytest.raises(UserError, match="'nodes' is undefined; the values it may use: array"):
        render("sweep", values, tmp_path)


def test_submitting_needs_the_commit_on_the_remote_and_nothing_uncommitted(tmp_path, monkeypatch):
    """The tasks clone the commit: uncommitted params, or a commit the remote lacks, stop
    `make slurm-sweep` before anything is submitted."""
    from apps import slurm
    from sft.params import UserError

    repo = copy_repository(tmp_path / "repo")
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    git(repo, "remote", "add", "origin", str(origin))
    monkeypatch.chdir(repo)
    with pytest.raises(UserError, match="is not on the git remote origin: .* git push origin HEAD"):
        slurm.committed_and_pushed("origin")
    git(repo, "push", "-q", "origin", "HEAD:main")
    edit(repo, lambda p: p["train"].update(epochs=3))
    with pytest.raises(UserError, match="uncommitted changes .*params.yaml"):
        slurm.committed_and_pushed("origin")
    git(repo, "checkout", "params.yaml")
    assert slurm.committed_and_pushed("origin")[1] == str(origin)


def test_a_stage_uses_the_cpus_it_was_given_never_more_than_it_may_run_on(monkeypatch):
    """Train's threads: SFT_CPUS (make sweep JOBS=n, or by hand), else Slurm's --cpus-per-task, else
    every CPU this process may run on; `make sweep JOBS=2` gives each experiment half the cores."""
    import os

    from apps.experiments import share_cpus
    from sft.device import given_cpus

    monkeypatch.setattr(os, "environ", dict(os.environ))  # share_cpus sets it; the copy goes with the test
    mine = len(os.sched_getaffinity(0))
    for name in ("SFT_CPUS", "SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(name, raising=False)
    assert given_cpus() == mine
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert given_cpus() == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "512")
    assert given_cpus() == mine  # never more threads than CPUs: they would spin against each other
    monkeypatch.setenv("SFT_CPUS", "1")
    assert given_cpus() == 1  # an explicit share wins over Slurm's
    monkeypatch.setenv("SFT_CPUS", "x")
    assert given_cpus() == mine  # SLURM_CPUS_PER_TASK 512, capped
    monkeypatch.delenv("SFT_CPUS")
    share_cpus(2)
    assert os.environ["SFT_CPUS"] == os.environ["OMP_NUM_THREADS"] == str(max(1, mine // 2))
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_seeds_multiply_the_grid_and_seeds_alone_are_a_seeds_run(monkeypatch, tmp_path):
    """SEEDS=N adds train.seed's N values (from the params' seed on) to GRID; `make slurm-seeds`
    is a seeds run, reported as `make seeds` reports; a seed given both ways is refused."""
    import shutil

    from apps import slurm
    from apps.experiments import combinations, grid_name
    from sft.params import UserError

    shutil.copy(ROOT / "presets" / "tiny.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    asked = []
    monkeypatch.setattr(slurm, "submit_sweep", lambda kind, words, p: asked.append((kind, words)))
    for argv in (["sweep", "--grid", "train.epochs=1,2", "--seeds", "3"], ["seeds", "--n", "2"]):
        monkeypatch.setattr("sys.argv", ["apps.slurm", *argv])
        slurm.main()
    seed = yaml.safe_load((tmp_path / "params.yaml").read_text())["train"].get("seed", 42)
    assert asked == [("sweep", ["train.epochs=1,2", f"train.seed={seed},{seed + 1},{seed + 2}"]),
                     ("seeds", [f"train.seed={seed},{seed + 1}"])]
    assert len(combinations(asked[0][1])) == 6 and grid_name(asked[1][1], "seeds").startswith("seeds-")
    monkeypatch.setattr("sys.argv", ["apps.slurm", "sweep", "--grid", "train.seed=1,2", "--seeds", "2"])
    with pytest.raises(UserError, match="SEEDS and train.seed in GRID"):
        slurm.main()
