"""A team's DVC remote over S3, against a real S3 server on loopback (moto's server mode).

Push outputs and the run-cache, wipe, pull: byte-identical. A second clone pulls the run-cache
and its `dvc repro` runs nothing. An experiment pushed from one clone is listed and applied in
the other. The server stopped in the middle of a push: a clear error, and a push after the
restart completes with nothing corrupted in the remote or the local cache."""

import hashlib
import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import dvc, free_port, run_copy

pytestmark = pytest.mark.slow

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "team-cache"
OUTPUTS = ("models", "data/prepared", "metrics")


class Outage:
    """A TCP relay in front of the S3 server. stop() is the server going away as a client sees it:
    the port refuses connections and every open connection is cut; start() brings it back."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.port = free_port()
        self.listener, self.conns = None, []

    def accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    def pump(self, src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # an orderly end of one direction (normal keep-alive close)
        except OSError:
            pass
        finally:
            if self.down:
                src.close()  # SO_LINGER 0: the peer gets a reset, as from a server that died

    def stop(self):
        self.down = True
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone would not
        self.listener.close()
        for conn in self.conns:
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.shutdown(socket.SHUT_RD)  # wakes its pump thread, which closes it (a reset)
            except OSError:
                pass
        self.conns = []

    def start(self):
        self.down = False
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self.accept, args=(self.listener,), daemon=True).start()


class S3:
    """moto's S3 server in this process (its objects live in this process), reached through a relay
    that can play an outage."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.moto_port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.moto_port, verbose=False)
        self.relay = Outage(self.moto_port)
        self.url = f"http://127.0.0.1:{self.relay.port}"

    def start(self):
        self.relay.start()

    def stop(self):
        self.relay.stop()

    def objects(self) -> dict[str, bytes]:
        from moto.backends import get_backend

        bucket = get_backend("s3")["123456789012"]["global"].buckets[BUCKET]
        return {key: obj.value for key, obj in list(bucket.keys.items())}


@pytest.fixture(scope="module")
def s3():
    import boto3

    for name, value in CREDENTIALS.items():  # credentials from the environment, never from .dvc/config
        os.environ[name] = value
    server = S3()
    server.server.start()
    server.start()
    try:
        boto3.client("s3", endpoint_url=server.url).create_bucket(Bucket=BUCKET)
        yield server
    finally:
        server.server.stop()


def git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", *args], cwd=repo, check=True,
                   capture_output=True)


def digests(repo: Path) -> dict[str, str]:
    """Every file of the output folders, but the scratch ones (models/train.partial, the replies
    kept by evaluate): a stage's own, never shared through the remote."""
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
            for out in OUTPUTS for p in sorted((repo / out).rglob("*"))
            if p.is_file() and not any(part.endswith(".partial") for part in p.relative_to(repo).parts)}


def content_addressed_ok(objects: dict[str, bytes]) -> list[str]:
    """Keys whose bytes do not hash to their name (DVC stores files/md5/<2>/<30>)."""
    bad = []
    for key, body in objects.items():
        if "/files/md5/" in key and not key.endswith(".dir"):
            name = "".join(key.split("/files/md5/")[1].split("/"))
            if hashlib.md5(body).hexdigest() != name:
                bad.append(key)
    return bad


def local_cache_bad(repo: Path) -> list[str]:
    root = repo / ".dvc" / "cache" / "files" / "md5"
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".dir")
            and hashlib.md5(p.read_bytes()).hexdigest() != p.parent.name + p.name]


@pytest.fixture(scope="module")
def team(s3, tiny_run, tmp_path_factory):
    """origin (a bare git repository), clone A that ran the pipeline, all on the S3 remote."""
    root = tmp_path_factory.mktemp("team")
    origin = root / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    a = run_copy(tiny_run, root / "a")  # the tiny configuration after `dvc repro`, branch main
    dvc(a, "remote", "add", "-d", "team", f"s3://{BUCKET}/cache")
    dvc(a, "remote", "modify", "team", "endpointurl", s3.url)
    # The remote, the lock and the run's speed (not a DVC output: git keeps it).
    git(a, "add", ".dvc/config", "dvc.lock", "metrics/speed")
    git(a, "commit", "-qm", "team repository with the pipeline's results")
    git(a, "remote", "add", "origin", str(origin))
    git(a, "push", "-q", "origin", "main")
    assert "pushed" in dvc(a, "push", "--run-cache")  # what `make push` runs
    return root, a, origin


def test_push_wipe_pull_is_byte_identical(team, s3):
    _, a, _ = team
    before = digests(a)
    assert any("/runs/" in k for k in s3.objects()), "the run-cache was not pushed"
    shutil.rmtree(a / ".dvc" / "cache")
    for out_dir in OUTPUTS:
        shutil.rmtree(a / out_dir)
    dvc(a, "pull", "--run-cache")
    git(a, "checkout", "--", "metrics")  # not DVC's outputs: metrics/speed/, metrics/others/README.md
    assert "up to date" in dvc(a, "status") or dvc(a, "status").strip() in ("", "Data and pipelines are up to date.")
    assert digests(a) == before


def test_second_clone_pulls_the_run_cache_and_runs_nothing(team):
    root, a, origin = team
    b = root / "b"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(b)], check=True)
    dvc(b, "pull", "--run-cache")  # what `make pull` runs
    assert digests(b) == digests(a)
    assert "Running stage" not in dvc(b, "repro")
    # Without the lock file, the pulled run-cache alone knows every stage's result: nothing reruns.
    every_stage = len(yaml.safe_load((b / "dvc.lock").read_text())["stages"])
    (b / "dvc.lock").unlink()
    for out_dir in OUTPUTS:
        shutil.rmtree(b / out_dir)
    git(b, "checkout", "--", "metrics")  # git's files stay in a clone (speed, others/README.md); DVC's are gone
    out = dvc(b, "repro")
    assert "Running stage" not in out and out.count("is cached - skipping run") == every_stage, out
    assert digests(b) == digests(a)


def test_an_experiment_pushed_from_one_clone_is_applied_in_the_other(team):
    root, a, origin = team
    # A param only the forgetting stage reads: one stage reruns. What travels is tested here, not
    # training (test_experiments and test_slurm train theirs).
    dvc(a, "exp", "run", "forgetting", "-S", "forgetting.max_documents=4", "--name", "four-documents")
    dvc(a, "exp", "push", "origin", "four-documents")
    b = root / "b-exp"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(b)], check=True)
    assert "four-documents" in dvc(b, "exp", "list", "origin")
    dvc(b, "exp", "pull", "origin", "four-documents")
    dvc(b, "exp", "apply", "four-documents")
    assert yaml.safe_load((b / "params.yaml").read_text())["forgetting"]["max_documents"] == 4
    forgetting = (b / "metrics" / "forgetting.json").read_text()
    assert json.loads(forgetting)["documents"] == 4 and forgetting == (a / "metrics" / "forgetting.json").read_text()


def test_a_sweep_sharded_across_two_machines_is_pulled_into_one_report(team):
    """`make sweep SHARD=i/2 PUSH=origin` on two clones of the team repository (each pulled the
    run-cache first, as `make pull` does), then `make sweep-report PULL=origin` on a third: one
    report of both shares. The grid is of a param only the forgetting stage reads, so each
    experiment reruns that one stage: the sharing is tested here, the ranking of trained
    experiments by test_experiments and test_slurm."""
    from apps.experiments import grid_name

    root, _, origin = team
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    grid = "forgetting.max_documents=4,6"
    machines = []
    for i in (1, 2):
        m = root / f"machine-{i}"
        subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(m)], check=True)
        dvc(m, "pull", "--run-cache")
        machines.append(subprocess.Popen(
            [sys.executable, "-m", "apps.experiments", "sweep", "--grid", grid, "--shard", f"{i}/2", "--push", "origin"],
            cwd=m, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    said = [p.communicate(timeout=900)[0] for p in machines]
    assert [p.returncode for p in machines] == [0, 0], said
    name = grid_name([grid])
    assert f"share 1/2 of {name}: 1 experiments" in said[0] and f"make sweep-report NAME={name} PULL=origin" in said[1]

    third = root / "machine-3"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(third)], check=True)
    done = subprocess.run([sys.executable, "-m", "apps.experiments", "report", name, "--pull", "origin"], cwd=third,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    table = json.loads((third / "reports" / name / "report.json").read_text())
    rows = {r["name"]: (r["state"], r["forgetting.max_documents"]) for r in table["rows"]}
    assert rows == {f"{name}-1": ("success", 4), f"{name}-2": ("success", 6)}, table
    # Each share's own result came through: its general-text figure, and the validation figure of
    # the run both started from (training did not rerun; a tie is ranked by name).
    assert all(r["general_text_loss_change"] is not None for r in table["rows"])
    assert len({r["eval_loss"] for r in table["rows"]} - {None}) == 1 and table["chosen"] == f"{name}-1"


def test_server_stopped_mid_push_fails_clearly_then_a_second_push_completes(s3, tmp_path):
    """What `make push` does (dvc push, default jobs and retries) when the server goes away with
    uploads in flight: each file left is retried (botocore: 5 attempts, ~1-15 s) and then dvc
    fails, naming the endpoint and the count of files not sent. Nothing partial is stored."""
    repo = tmp_path / "bulk-repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "remote", "add", "-d", "team", f"s3://{BUCKET}/bulk")
    dvc(repo, "remote", "modify", "team", "endpointurl", s3.url)
    rng = random.Random(0)
    (repo / "bulk").mkdir()
    files = 40
    for i in range(files):  # large enough that the outage cuts uploads with bytes in flight
        (repo / "bulk" / f"{i:03}.bin").write_bytes(rng.randbytes(512 * 1024))
    dvc(repo, "add", "bulk")
    before = len(s3.objects())
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    env.pop("AWS_MAX_ATTEMPTS", None)  # botocore's default retries, as a user has them
    push = subprocess.Popen([sys.executable, "-m", "dvc", "push"], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while len(s3.objects()) < before + 5 and push.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        s3.stop()  # the server goes away with uploads in flight
        stopped = time.time()
        out, _ = push.communicate(timeout=240)
        seconds = time.time() - stopped
    finally:
        if push.poll() is None:
            push.kill()
        s3.start()
    uploaded = len(s3.objects()) - before
    assert 0 < uploaded < files + 1, (uploaded, out[-3000:])
    assert push.returncode != 0, out[-3000:]
    # The error names the endpoint it could not reach and how many files did not go.
    assert f'Could not connect to the endpoint URL: "{s3.url}/{BUCKET}/bulk/files/md5/' in out, out[-3000:]
    failed = re.search(r"failed to push data to the cloud - (\d+) files? failed to upload", out)
    # Every file missing from the remote is reported (one whose reply was cut may be both).
    assert failed and files + 1 - uploaded <= int(failed.group(1)) <= files + 1, (uploaded, out[-3000:])
    print(f"push failed {seconds:.0f} s after the outage; {uploaded} objects had arrived, "
          f"{failed.group(1)} reported not sent")

    assert "pushed" in dvc(repo, "push")
    objects = s3.objects()
    assert len(objects) - before == files + 1  # every file and the folder's listing
    assert content_addressed_ok(objects) == [] and local_cache_bad(repo) == []
    assert "Everything is up to date" in dvc(repo, "push")
