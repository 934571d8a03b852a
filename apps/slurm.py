"""make slurm-sweep, make slurm-seeds, make slurm-train: the project's experiments as Slurm jobs.

    make slurm-sweep GRID="train.learning_rate=1e-4,3e-4" [SEEDS=N]  # a job array, then its report
    make slurm-seeds N=3
    make slurm-train NODES=2 [PROCS_PER_NODE=1]                     # one training run over several nodes

Each job is written from a template of configs/slurm/ (read and edit it) with the `slurm:`
section of params.yaml (PARTITION=, ACCOUNT= and TIME= override it), printed, submitted with
sbatch, and its id printed with how to follow it. Job scripts, logs and clones go under
`slurm.workdir` (a folder every node sees).

A sweep is a job array over the grid's combinations, named as a sharded `make sweep` names them
(sweep-<grid id>-<place>: every node, and every resubmission, agrees). A task clones the commit
from the git remote into its own folder (kept: a task Slurm requeues finds its checkpoints there
and resumes), pulls the run-cache, runs its experiment in that clone (`dvc exp run`, up to
compare and forgetting) and pushes it (`dvc exp push --run-cache`). The report is a job that
starts when the array has ended (afterany): it pulls every pushed experiment and writes
reports/<name>/ as `make sweep-report` does, listing each experiment with no pushed result as
failed, with its log. Submitted again with the same grid, only the combinations with no pushed
result run. The commit must be on the git remote, and the workspace's tracked files committed:
the tasks run the commit, not the workspace.

Multi-node training is one job: the stages train needs run once on the first node, launch.*
is set in params.yaml for the job's nodes (as `dvc exp run -S` would set it), then srun starts
one launcher a node: node 0 `dvc exp run train` (it writes the outputs and dvc.lock), the others
`python -m sft.launch --machine-rank <SLURM_NODEID>`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import yaml

from apps.experiments import SEED, TARGETS, combinations, grid_name, overrides, report, value
from sft.files import write_json, write_text
from sft.params import UserError, from_dict, read_section, read_yaml, run
from sft.slurm import SlurmParams, render, sbatch_options


def git(*args: str, cwd: str | Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"git {' '.join(args)} failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return done.stdout.strip()


def dvc(*args: str, cwd: str | Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise UserError(f"dvc {' '.join(args)} failed: {(done.stderr or done.stdout).strip()[-600:]}")
    return done


def settings(partition: str | None, account: str | None, time: str | None) -> SlurmParams:
    """The `slurm:` section, with what make was given on top, checked as one."""
    p = from_dict(SlurmParams, read_section("slurm"), "params.yaml: slurm")
    given = {k: v for k, v in (("partition", partition), ("account", account), ("time", time)) if v}
    return replace(p, **given) if given else p


def pushed(remote: str, cwd: str | Path | None = None) -> set[str]:
    """Experiment names the git remote holds for this commit."""
    return set(dvc("exp", "list", remote, "--name-only", cwd=cwd).stdout.split())


def committed_and_pushed(remote: str) -> tuple[str, str]:
    """HEAD's commit and the remote's URL, once the tasks can clone it: tracked files committed, the
    commit on the remote."""
    if changed := git("status", "--porcelain", "--untracked-files=no"):
        raise UserError(f"uncommitted changes ({changed.splitlines()[0].strip()}, ...): the tasks run the commit, "
                        "not the workspace; commit them and push (git push)")
    url = git("remote", "get-url", remote)
    commit = git("rev-parse", "HEAD")
    git("fetch", "-q", remote)
    if not git("branch", "-r", "--contains", commit):
        raise UserError(f"commit {commit[:12]} is not on the git remote {remote}: the tasks clone it from there; "
                        f"git push {remote} HEAD")
    return commit, url


def workdir(p: SlurmParams, name: str) -> Path:
    return Path(p.workdir).resolve() / name


def sbatch(script: Path, *args: str) -> str:
    """Submit; the job id."""
    if not shutil.which("sbatch"):
        raise UserError("sbatch is not on PATH: run this on a machine of the cluster (a login node)")
    done = subprocess.run(["sbatch", "--parsable", *args, str(script)], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"sbatch {script} failed: {(done.stderr or done.stdout).strip()[-400:]}")
    return done.stdout.strip().split(";")[0]


def write_script(path: Path, text: str) -> Path:
    write_text(path, text)
    print(f"--- {path}\n{text}---", flush=True)
    return path


def common(p: SlurmParams, name: str) -> dict:
    folder = workdir(p, name)
    return {"name": name, "logs": str(folder / "logs"), "options": sbatch_options(p), "setup": list(p.setup),
            "venv": str(Path(sys.executable).parent), "repo": str(Path.cwd().resolve())}


def submit_sweep(kind: str, words: list[str], p: SlurmParams) -> tuple[str, str | None]:
    """The array of the combinations with no pushed result, and the report after it; their ids."""
    commit, url = committed_and_pushed(p.git_remote)
    name = grid_name(words, kind)
    folder = workdir(p, name)
    combos = dict(enumerate(combinations(words), 1))
    on_remote = pushed(p.git_remote)
    done = {place for place in combos if f"{name}-{place}" in on_remote}
    todo = [place for place in combos if place not in done]
    plan = {"name": name, "kind": kind, "commit": commit, "url": url, "remote": p.git_remote,
            "experiments": {str(k): v for k, v in combos.items()}, "clones": str(folder / "clones"),
            "logs": str(folder / "logs"), "reports": str(Path("reports").resolve())}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    write_json(folder / "plan.json", plan)
    values = {**common(p, name), "plan": str(folder / "plan.json")}
    print(f"[slurm] {name}: {len(combos)} experiments of {' '.join(words)} at {commit[:12]}; "
          f"{len(done)} already pushed to {p.git_remote}, {len(todo)} to run", flush=True)
    array = None
    if todo:
        script = write_script(folder / "sweep.sbatch", render("sweep", {**values, "array": ",".join(map(str, todo))}))
        array = sbatch(script)
        plan["array"] = array  # the report names each failed task's log by it
        write_json(folder / "plan.json", plan)
        print(f"[slurm] submitted job array {array} (tasks {','.join(map(str, todo))}): squeue -j {array}; logs in "
              f"{folder / 'logs'}", flush=True)
    script = write_script(folder / "report.sbatch", render("report", values))
    after = ["--dependency", f"afterany:{array}"] if array else []
    report_job = sbatch(script, *after)
    print(f"[slurm] submitted the report {report_job}{f' (after {array})' if array else ''}: reports/{name}/ when it "
          f"ends; again any time: make sweep-report NAME={name} PULL={p.git_remote}", flush=True)
    return array, report_job


def log_of(plan: dict, place: str, array: str | None) -> str:
    """A task's Slurm log (the sweep template's --output, %x-%A_%a.out)."""
    return f"{plan['logs']}/{plan['name']}-{array or '<job id>'}_{place}.out"


def clone_at(plan: dict, place: str) -> Path:
    """The task's own clone at the plan's commit; one from an earlier run of this task is reused
    (its checkpoints resume). A clone is made beside and renamed into place: never half made."""
    clone = Path(plan["clones"]) / f"{plan['commit'][:12]}-{place}"
    if (clone / ".git").is_dir():
        print(f"[slurm] reusing {clone} (an earlier run of this task: it resumes from its checkpoints)", flush=True)
        return clone
    partial = clone.with_name(clone.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    git("clone", "-q", "--no-checkout", plan["url"], str(partial))
    git("checkout", "-q", plan["commit"], cwd=partial)
    partial.rename(clone)
    return clone


def task(plan_path: str, place: str) -> None:
    """One experiment of the plan: cloned, run, pushed; skipped when the remote already holds it."""
    plan = json.loads(Path(plan_path).read_text())
    if place not in plan["experiments"]:
        raise UserError(f"{plan_path} has no experiment {place} (1..{len(plan['experiments'])})")
    name, words, remote = f"{plan['name']}-{place}", plan["experiments"][place], plan["remote"]
    threads()
    clone = clone_at(plan, place)
    if name in pushed(remote, cwd=clone):
        print(f"[slurm] {name} is already on {remote}: nothing to run", flush=True)
        return
    try:
        local = set(dvc("exp", "list", "--name-only", cwd=clone).stdout.split())
        if name not in local:
            if dvc("pull", "--run-cache", cwd=clone, check=False).returncode != 0:
                print("[slurm] dvc pull --run-cache found nothing to pull (or part): the stages run", flush=True)
            print(f"[slurm] {name}: {' '.join(words)}", flush=True)
            done = subprocess.run([sys.executable, "-m", "dvc", "exp", "run", "-n", name, *TARGETS,
                                   *[x for w in words for x in ("-S", w)]], cwd=clone)
            if done.returncode != 0:
                raise UserError(f"dvc exp run exited with {done.returncode} (its output is above)")
        # Outputs first, then the ref: `dvc exp push` sends the git ref before the outputs, so a task
        # cancelled between the two would leave an experiment on the remote without its outputs.
        dvc("push", "--run-cache", cwd=clone)
        dvc("exp", "push", "--run-cache", remote, name, cwd=clone)
    except UserError as e:
        log = log_of(plan, place, os.environ.get("SLURM_ARRAY_JOB_ID"))
        raise UserError(f"{name} failed: {e}; its log: {log}; the other tasks go on") from None
    print(f"[slurm] {name} pushed to {remote}", flush=True)


def full_params(clone: Path, words: list[str]) -> dict:
    """The commit's params with one combination's `key=value` words set, as `dvc exp run -S` sets them."""
    params = read_yaml(clone / "params.yaml")
    for word in words:
        key, raw = word.split("=", 1)
        *parents, last = key.split(".")
        tree = params
        for part in parents:
            tree = tree.setdefault(part, {})
        tree[last] = yaml.safe_load(raw)
    return params


def report_job(plan_path: str) -> None:
    """Every pushed experiment of the plan pulled into the report's clone, and the report; those with no
    pushed result listed as failed with their logs."""
    plan = json.loads(Path(plan_path).read_text())
    clone = clone_at(plan, "report")
    names = {f"{plan['name']}-{place}": place for place in plan["experiments"]}
    found = sorted(n for n in pushed(plan["remote"], cwd=clone) if n in names)
    if found:
        print(f"[slurm] pulling {len(found)} experiments from {plan['remote']}: {', '.join(found)}", flush=True)
        dvc("exp", "pull", plan["remote"], *found, cwd=clone)
    missing = [{"name": n, "state": "failed", "params": full_params(clone, plan["experiments"][place]), "metrics": {},
                "log": log_of(plan, place, plan.get("array"))} for n, place in names.items() if n not in found]
    for m in missing:
        print(f"[slurm] {m['name']}: no pushed result (failed, cancelled or not run); its log: {m['log']}", flush=True)
    os.chdir(clone)
    report(plan["name"], plan["kind"], out_dir=plan["reports"], missing=missing)


def threads() -> None:
    """A task's stages use the CPUs Slurm gave it, not every core of a node it may share (the
    login node's OMP_NUM_THREADS, which sbatch passes on, is not this node's); OpenMP threads that
    wait yield their core to the node's other jobs instead of spinning on it."""
    from sft.device import given_cpus

    os.environ["OMP_NUM_THREADS"] = str(given_cpus())  # the stages other than train (which reads given_cpus)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def submit_train(p: SlurmParams, nodes: int, procs_per_node: int) -> str:
    if nodes < 1 or procs_per_node < 1:
        raise UserError("NODES and PROCS_PER_NODE must be at least 1")
    name = "train"
    folder = workdir(p, name)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    values = {**common(p, name), "nodes": nodes, "procs_per_node": procs_per_node}
    script = write_script(folder / "train.sbatch", render("train", values))
    job = sbatch(script)
    print(f"[slurm] submitted {job}: {nodes} nodes x {procs_per_node} processes; squeue -j {job}; its log: "
          f"{folder / 'logs'}/train-{job}.out; the run is an experiment: dvc exp show", flush=True)
    return job


def first_node_address() -> str:
    """The address of the job's first node (its NodeAddr: on most clusters, its hostname)."""
    first = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], capture_output=True,
                           text=True, check=True).stdout.split()[0]
    shown = subprocess.run(["scontrol", "show", "node", "-o", first], capture_output=True, text=True).stdout
    m = re.search(r"\bNodeAddr=(\S+)", shown)
    return m.group(1) if m else first


def free_port() -> int:
    """A port free on this node (the job's first, where the main process listens) now: a fixed one
    (accelerate's 29500) collides with another job's on a shared node."""
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def before_train(procs_per_node: int) -> None:
    """On the first node, before any launcher starts: launch.* for this job's nodes in params.yaml
    (DVC's own YAML editing, comments kept), then every stage train needs."""
    from dvc.repo import Repo
    from dvc.utils.serialize import modify_yaml

    nodes = int(os.environ["SLURM_JOB_NUM_NODES"])
    port = read_section("launch").get("main_process_port") or free_port()
    setting = {"num_machines": nodes, "num_processes": nodes * procs_per_node, "machine_rank": 0,
               "main_process_ip": first_node_address(), "main_process_port": port}
    with modify_yaml("params.yaml") as params:
        params["launch"].update(setting)
    print(f"[slurm] launch: {json.dumps(setting)}", flush=True)
    with Repo(".") as repo:
        needed = sorted(s.addressing for s in repo.stage.collect("train", with_deps=True) if s.addressing != "train")
    if needed:
        done = subprocess.run([sys.executable, "-m", "dvc", "repro", *needed])
        if done.returncode != 0:
            raise UserError(f"dvc repro {' '.join(needed)} failed (above): no node started training")


def train_node() -> None:
    """One node's launcher: node 0 under DVC, the others outside it with their rank."""
    rank = int(os.environ["SLURM_NODEID"])
    threads()
    argv = [sys.executable, "-m", "dvc", "exp", "run", "train"] if rank == 0 else \
        [sys.executable, "-m", "sft.launch", "--machine-rank", str(rank)]
    print(f"[slurm] node {rank} ({os.environ.get('SLURMD_NODENAME', '?')}): {' '.join(argv[1:])}", flush=True)
    sys.exit(subprocess.run(argv).returncode)


def main() -> None:
    ap = argparse.ArgumentParser(description="Sweeps, seeds and multi-node training as Slurm jobs.")
    sub = ap.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep", help="a grid as a job array, then its report")
    sweep.add_argument("--grid", required=True, help='"train.learning_rate=1e-4,3e-4 train.lora_r=8,16"')
    sweep.add_argument("--seeds", type=int, default=0, help="each combination with N seeds (train.seed)")
    seeds = sub.add_parser("seeds", help="N experiments differing only in train.seed, then their spread")
    seeds.add_argument("--n", type=int, default=3)
    train = sub.add_parser("train", help="one training run over NODES nodes")
    train.add_argument("--nodes", type=int, default=2)
    train.add_argument("--procs-per-node", type=int, default=1)
    for p in (sweep, seeds, train):
        p.add_argument("--partition")
        p.add_argument("--account")
        p.add_argument("--time")
    for command, helps in (("task", "one task of a job array (in the job)"), ("report", "a sweep's report (in the job)")):
        p = sub.add_parser(command, help=helps)
        p.add_argument("plan")
        if command == "task":
            p.add_argument("place")
    p = sub.add_parser("before-train", help="on the first node of a training job")
    p.add_argument("procs_per_node", type=int)
    sub.add_parser("train-node", help="one node's launcher (under srun)")
    args = ap.parse_args()

    if args.command == "task":
        task(args.plan, args.place)
    elif args.command == "report":
        report_job(args.plan)
    elif args.command == "before-train":
        before_train(args.procs_per_node)
    elif args.command == "train-node":
        train_node()
    else:
        p = settings(args.partition, args.account, args.time)
        if args.command == "train":
            submit_train(p, args.nodes, args.procs_per_node)
            return
        params = read_yaml("params.yaml")
        if args.command == "sweep":
            words = overrides(args.grid, params)
            if args.seeds:
                if any(w.startswith(f"{SEED}=") for w in words):
                    raise UserError(f"SEEDS and {SEED} in GRID: give the seeds one way")
                first = int(value(params, SEED) or 42)
                words.append(f"{SEED}={','.join(str(first + i) for i in range(args.seeds))}")
            submit_sweep("sweep", words, p)
        else:
            if args.n < 2:
                raise UserError("N must be at least 2: one seed has no spread")
            first = int(value(params, SEED) or 42)
            submit_sweep("seeds", [f"{SEED}={','.join(str(first + i) for i in range(args.n))}"], p)


if __name__ == "__main__":
    run(main)
