"""A real Slurm cluster on loopback, from Debian's slurm-wlm and munge: its own munged (a key made
for it), one slurmctld and two slurmd nodes, n1 and n2, both 127.0.0.1 on their own ports, one
CPU each; every spool, state, pid, log and socket under one folder; stopped by pid.

    cluster = Cluster(folder); cluster.start(); ...; cluster.stop()
    subprocess.run(["sbatch", ...], env=cluster.env)   # SLURM_CONF names this cluster
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "sinfo", "scontrol", "scancel", "squeue")
NODES = ("n1", "n2")


def missing() -> list[str]:
    return [d for d in DAEMONS if not shutil.which(d) and not Path("/usr/sbin", d).exists()]


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class Cluster:
    def __init__(self, folder: Path):
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.socket = folder / "munge" / "munge.socket"
        self.munged: int | None = None
        self.daemons: list[subprocess.Popen] = []
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def write_conf(self) -> None:
        f = self.folder
        ctld, n1, n2 = port(), port(), port()
        nodes = "\n".join(f"NodeName={n} NodeAddr=127.0.0.1 NodeHostname=localhost Port={p} CPUs=1 State=UNKNOWN"
                          for n, p in zip(NODES, (n1, n2), strict=True))
        self.conf.write_text(f"""ClusterName=loopback
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.socket}
CredType=cred/munge
StateSaveLocation={f}/state
SlurmdSpoolDir={f}/spool/%n
SlurmctldPidFile={f}/slurmctld.pid
SlurmdPidFile={f}/slurmd-%n.pid
SlurmctldLogFile={f}/slurmctld.log
SlurmdLogFile={f}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
MinJobAge=3600
{nodes}
PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
""")

    def start(self, timeout: float = 60) -> None:
        f = self.folder
        for sub in ("munge", "state", *(f"spool/{n}" for n in NODES)):
            (f / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(f / "munge", 0o700)
        key = f / "munge" / "munge.key"
        subprocess.run([binary("mungekey"), "-c", "-f", "-k", str(key)], check=True, capture_output=True)
        os.chmod(key, 0o600)
        subprocess.run([binary("munged"), "--force", f"--socket={self.socket}", f"--key-file={key}",
                        f"--pid-file={f}/munge/munged.pid", f"--log-file={f}/munge/munged.log",
                        f"--seed-file={f}/munge/munged.seed"], check=True, capture_output=True)
        self.munged = int((f / "munge" / "munged.pid").read_text())
        self.write_conf()
        self.daemon([binary("slurmctld"), "-D", "-i", "-f", str(self.conf)], "slurmctld")
        for n in NODES:
            self.daemon([binary("slurmd"), "-D", "-N", n, "-f", str(self.conf)], f"slurmd-{n}")
        deadline = time.time() + timeout
        while time.time() < deadline:
            shown = subprocess.run(["sinfo", "-N", "-h", "-o", "%N %t"], env=self.env, capture_output=True, text=True)
            states = dict(line.split() for line in shown.stdout.splitlines() if line.strip())
            if all(states.get(n) == "idle" for n in NODES):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the loopback Slurm cluster did not come up: {shown.stdout}{shown.stderr}\n"
                           + (f / "slurmctld.log").read_text()[-2000:])

    def daemon(self, argv: list[str], name: str) -> None:
        with open(self.folder / f"{name}.out", "w") as log:
            self.daemons.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                                 start_new_session=True))

    def run(self, *argv: str, check: bool = True, cwd=None) -> subprocess.CompletedProcess:
        done = subprocess.run(list(argv), env=self.env, capture_output=True, text=True, cwd=cwd)
        assert not check or done.returncode == 0, f"{' '.join(argv)}: {done.stdout}{done.stderr}"
        return done

    def wait(self, job: str, timeout: float = 900) -> None:
        """Until the job (every task of an array) has left the queue."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.run("squeue", "-h", "-j", job, check=False).stdout.strip():
                return
            time.sleep(1)
        raise TimeoutError(f"job {job} still queued or running after {timeout} s")

    def state(self, job: str) -> dict[str, str]:
        """Each task's state as slurmctld keeps it: {"123_1": "COMPLETED", ...}."""
        shown = self.run("scontrol", "show", "job", "-o", job, check=False).stdout
        states = {}
        for line in shown.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            task = fields.get("ArrayTaskId")
            states[f"{fields.get('ArrayJobId', fields.get('JobId'))}_{task}" if task else fields.get("JobId")] = \
                fields.get("JobState")
        return states

    def stop(self) -> None:
        """Every job cancelled (its processes are slurmstepd's, not slurmd's), then the daemons, by pid."""
        if self.daemons:
            self.run("scancel", "--partition=debug", check=False)
            deadline = time.time() + 20
            while time.time() < deadline and self.run("squeue", "-h", check=False).stdout.strip():
                time.sleep(0.5)
        for proc in reversed(self.daemons):
            proc.terminate()
        for proc in self.daemons:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.munged:
            try:
                os.kill(self.munged, signal.SIGTERM)
            except ProcessLookupError:
                pass
