"""Resume after kill -9: the same final validation loss as a run that was never interrupted."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, git_workdir, prepared

from sft import resume

PARAMS = """\
prepare:
  train_on: all_assistant
  max_length: 512
train:
  method: lora
  epochs: 3
  lora_r: 8
  lora_alpha: 16
  learning_rate: 5.0e-3
  per_device_train_batch_size: 1
  per_device_eval_batch_size: 4
  logging_steps: 1
  seed: 0
  gradient_checkpointing: false
"""


def workdir(tmp_path, name, model, params=PARAMS):
    work = git_workdir(tmp_path / name)
    (work / "params.yaml").write_text(params)
    prepared(work / "data", n_train=12, n_val=4, model_dir=model)
    return work


def train(work, model, env=None, **popen):
    cmd = [sys.executable, "-m", "stages.train", "--model", str(model), "--data", "data", "--out", "out",
           "--metrics", "train.json", "--live", "live"]
    # W&B settings come only from `env`: none inherited from this process (an earlier in-process
    # test may have started a wandb service, whose address is in WANDB_SERVICE).
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env = {**inherited, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def final_eval_loss(work) -> float:
    return json.loads((work / "train.json").read_text())["eval_loss"]


@pytest.mark.slow
def test_killed_run_resumes_and_ends_where_an_uninterrupted_run_ends(tmp_path, tiny_model_dir):
    straight = workdir(tmp_path, "straight", tiny_model_dir)
    assert train(straight, tiny_model_dir).wait(timeout=300) == 0
    expected = final_eval_loss(straight)

    killed = workdir(tmp_path, "killed", tiny_model_dir)
    # W&B offline on the interrupted run: the resumed process must continue the same W&B run.
    wandb = {"WANDB_PROJECT": "sft-test", "WANDB_MODE": "offline", "WANDB_DIR": str(killed), "WANDB_SILENT": "true"}
    if importlib.util.find_spec("wandb") is None:
        wandb = {}
    run = train(killed, tiny_model_dir, env=wandb)
    deadline = time.time() + 300
    while not (killed / "out.partial" / "checkpoint-12" / "trainer_state.json").is_file():
        assert run.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    os.kill(run.pid, signal.SIGKILL)  # kill -9: no handler runs, nothing is tidied
    run.wait()
    assert not (killed / "train.json").exists()

    again = train(killed, tiny_model_dir, env=wandb)
    log, _ = again.communicate(timeout=300)
    assert again.returncode == 0, log[-3000:]
    assert "[train] resuming from out.partial/checkpoint-" in log
    assert not (killed / "out.partial").exists()  # renamed into place when the run ended
    assert final_eval_loss(killed) == pytest.approx(expected, abs=1e-5)
    state = json.loads((killed / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 36
    # The loss curve is whole: the replayed history and the resumed steps, each step once.
    steps = [line.split("\t")[0] for line in (killed / "live" / "plots" / "metrics" / "train" / "loss.tsv")
             .read_text().splitlines()[1:]]
    assert steps == [str(s) for s in range(1, 37)]
    if wandb:
        runs = [p.name for p in (killed / "wandb").glob("offline-run-*")]
        assert len(runs) == 2 and len({name.rsplit("-", 1)[1] for name in runs}) == 1  # two processes, one W&B run
        assert not (killed / "out" / "wandb-run-id").exists()  # a random id stays out of the hashed output


def checkpoint(out, step):
    (out / f"checkpoint-{step}").mkdir()
    (out / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def test_other_params_or_a_finished_run_start_clean_and_keep_the_old_checkpoints(tmp_path, capsys):
    out = tmp_path / "train.partial"
    assert resume.plan(out, "a" * 64) is None and (out / resume.FINGERPRINT).is_file()
    checkpoint(out, 5)
    (out / "checkpoint-10").mkdir()  # half-written: no trainer state, never resumed from
    assert resume.plan(out, "a" * 64) == out / "checkpoint-5"
    assert "resuming from" in capsys.readouterr().out

    assert resume.plan(out, "b" * 64) is None  # other params or data: start clean, set the old run aside
    said = capsys.readouterr().out
    assert "other params or data; starting clean. Its checkpoints are kept in " in said
    kept = tmp_path / "train.stale" / ("a" * 16)
    assert str(kept) in said and (kept / "checkpoint-5" / "trainer_state.json").is_file()
    assert not (out / "checkpoint-5").exists()

    checkpoint(out, 5)
    resume.mark_complete(out, {"eval_loss": 1.0})
    assert resume.plan(out, "b" * 64) is None
    assert "the last run finished; starting clean" in capsys.readouterr().out

    for digest in ("c", "d", "e"):  # only the newest `keep` runs set aside stay
        checkpoint(out, 7)
        resume.plan(out, digest * 64, keep=2)
    left = sorted(p.name for p in (tmp_path / "train.stale").iterdir())
    assert left == ["c" * 16, "d" * 16]


def test_a_folder_without_checkpoints_is_simply_replaced(tmp_path):
    out = tmp_path / "train.partial"
    resume.plan(out, "a" * 64)
    assert resume.plan(out, "b" * 64) is None and not (tmp_path / "train.stale").exists()


def test_fingerprint_follows_params_and_bytes(tmp_path):
    (tmp_path / "d.jsonl").write_text("a\n")
    first = resume.fingerprint({"lr": 1}, [tmp_path / "d.jsonl"])
    assert first == resume.fingerprint({"lr": 1}, [tmp_path / "d.jsonl"])
    assert first != resume.fingerprint({"lr": 2}, [tmp_path / "d.jsonl"])
    (tmp_path / "d.jsonl").write_text("b\n")
    assert first != resume.fingerprint({"lr": 1}, [tmp_path / "d.jsonl"])


@pytest.mark.slow
def test_kill_then_more_epochs_starts_clean_and_keeps_the_killed_runs_checkpoints(tmp_path, tiny_model_dir):
    """Raising epochs after a kill changes the learning-rate schedule of every step, so the run
    starts clean (it is not the interrupted run any more); the interrupted checkpoints stay."""
    work = workdir(tmp_path, "work", tiny_model_dir)
    run = train(work, tiny_model_dir)
    deadline = time.time() + 300
    while not (work / "out.partial" / "checkpoint-12" / "trainer_state.json").is_file():
        assert run.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    (work / "params.yaml").write_text(PARAMS.replace("  epochs: 3\n", "  epochs: 4\n"))

    again = train(work, tiny_model_dir)
    log, _ = again.communicate(timeout=300)
    assert again.returncode == 0, log[-3000:]
    assert "they come from other params or data; starting clean. Its checkpoints are kept in" in log
    [kept] = (work / "out.stale").iterdir()
    assert (kept / "checkpoint-12" / "trainer_state.json").is_file()
    assert json.loads((work / "out" / "trainer_state.json").read_text())["global_step"] == 48


def test_another_launch_or_other_training_code_starts_clean(tmp_path, capsys):
    """A killed 1-process run is not resumed as a 4-process (or FSDP) run, nor by edited code."""
    out = tmp_path / "train.partial"
    one = {"world_size": 1, "distributed_type": "NO", "code": "c1"}
    resume.plan(out, "a" * 64, run=one)
    checkpoint(out, 5)
    assert resume.plan(out, "a" * 64, run=one) == out / "checkpoint-5"
    for other in ({**one, "world_size": 4}, {**one, "code": "c2"}):
        assert resume.plan(out, "a" * 64, run=other) is None
        assert "it ran with another launch or other training code; starting clean" in capsys.readouterr().out
        assert not (out / "checkpoint-5").exists()
        checkpoint(out, 5)


def test_code_digest_follows_the_bytes_of_the_code(tmp_path):
    (tmp_path / "train.py").write_text("a = 1\n")
    first = resume.code_digest([tmp_path / "train.py"])
    (tmp_path / "train.py").write_text("a = 2\n")
    assert resume.code_digest([tmp_path / "train.py"]) != first


def test_a_cut_newest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    out = tmp_path / "train.partial"
    resume.plan(out, "a" * 64)
    for step in (5, 10):
        checkpoint(out, step)
        save_file({"w": torch.zeros(64)}, out / f"checkpoint-{step}" / "adapter_model.safetensors")
        torch.save({"state": {}}, out / f"checkpoint-{step}" / "optimizer.pt")
    assert resume.plan(out, "a" * 64) == out / "checkpoint-10"
    weights = out / "checkpoint-10" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # killed mid-write, or a full disk
    assert resume.plan(out, "a" * 64) == out / "checkpoint-5"
    said = capsys.readouterr().out
    assert "checkpoint-10 cannot be resumed from (adapter_model.safetensors is cut short); trying the one before" \
        in said and "resuming from " + str(out / "checkpoint-5") in said
    optimizer = out / "checkpoint-5" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    (out / "checkpoint-5" / "trainer_state.json").write_text('{"global_step": ')
    assert resume.last_checkpoint(out) is None  # nothing readable: the run starts clean
    assert resume.plan(out, "a" * 64) is None
    assert "none of its checkpoints can be read; starting clean" in capsys.readouterr().out


def test_a_folder_the_stage_did_not_make_is_never_deleted(tmp_path):
    out = tmp_path / "train.partial"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(resume.UserError, match="train.partial exists and was not made by the train stage"):
        resume.plan(out, "a" * 64)
    assert (out / "notes.txt").read_text() == "mine"


def test_publish_moves_a_finished_run_across_filesystems(tmp_path, monkeypatch):
    """os.replace cannot cross filesystems (--scratch on another disk): the run is copied beside
    the output, renamed into place, and only then is the scratch folder removed."""
    import errno

    scratch, out = tmp_path / "scratch" / "run", tmp_path / "models" / "train"
    resume.plan(scratch, "a" * 64, run={"code": "c"})
    checkpoint(scratch, 5)
    resume.mark_complete(scratch, {"eval_loss": 1.0})
    out.mkdir(parents=True)
    (out / "old").write_text("the previous output")
    real = resume.os.replace

    def across(src, dst):
        if Path(src).parent.parent == tmp_path / "scratch":
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real(src, dst)

    monkeypatch.setattr(resume.os, "replace", across)
    resume.publish(scratch, out)
    assert (out / "checkpoint-5" / "trainer_state.json").is_file() and (out / resume.COMPLETE).is_file()
    assert not (out / "old").exists() and not scratch.exists()
    assert not (out / resume.RUN).exists()  # how the run was launched is not part of the output
    assert sorted(p.name for p in out.parent.iterdir()) == ["train"]


@pytest.mark.parametrize("header", [b"[]", b'"text"', b'{"w": []}', b'{"w": {"data_offsets": "x"}}',
                                    b'{"w": {"data_offsets": [0]}}', b'{"w": {"data_offsets": [0, -5]}}',
                                    b'{"w": {"dtype": "F32"}}', b"[" * 50_000, b"{not json"])
def test_a_checkpoint_whose_weights_header_is_no_table_is_skipped_for_the_one_before(tmp_path, capsys, header):
    import struct

    out = tmp_path / "train.partial"
    resume.plan(out, "a" * 64)
    for step in (5, 10):
        checkpoint(out, step)
    (out / "checkpoint-10" / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    assert resume.plan(out, "a" * 64) == out / "checkpoint-5"
    assert "checkpoint-10 cannot be resumed from" in capsys.readouterr().out


@pytest.mark.parametrize("state", ["[]", '{"log_history": []}', '{"global_step": "5"}', "5"])
def test_a_checkpoint_whose_trainer_state_is_no_state_is_skipped(tmp_path, capsys, state):
    out = tmp_path / "train.partial"
    resume.plan(out, "a" * 64)
    for step in (5, 10):
        checkpoint(out, step)
    (out / "checkpoint-10" / "trainer_state.json").write_text(state)
    assert resume.plan(out, "a" * 64) == out / "checkpoint-5"
    assert "trainer_state.json" in capsys.readouterr().out


@pytest.mark.parametrize("marker", ['{"order": ', "", "[]", '{"order": "1"}', '{"why": "x"}', "\xff"])
def test_a_torn_or_foreign_set_aside_marker_is_left_alone_and_later_set_asides_go_on(tmp_path, capsys, marker):
    out = tmp_path / "train.partial"
    stale = resume.stale_folder(out)
    (stale / "torn").mkdir(parents=True)
    (stale / "torn" / resume.SET_ASIDE).write_bytes(marker.encode("latin-1"))
    for digest in ("a", "b", "c"):
        resume.plan(out, digest * 64, keep=1)
        checkpoint(out, 5)
    resume.plan(out, "d" * 64, keep=1)
    kept = sorted(p.name for p in stale.iterdir())
    assert kept == ["cccccccccccccccc", "torn"], kept  # pruned to one run of its own; the torn one untouched
    assert "torn/set_aside.json cannot be read" in capsys.readouterr().out


def test_every_marker_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A kill between writing a marker and closing it leaves the old marker or none, never half."""
    from sft import files

    out = tmp_path / "train.partial"
    resume.plan(out, "a" * 64)
    checkpoint(out, 5)
    real = files.os.replace

    def killed(src, dst):
        if str(dst).endswith(".json"):
            raise KeyboardInterrupt("killed before the rename")
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        resume.plan(out, "b" * 64)  # sets the run aside, then writes its marker
    with pytest.raises(KeyboardInterrupt):
        resume.mark_complete(out if out.exists() else tmp_path, {"eval_loss": 1.0})
    for marker in [*tmp_path.rglob("*.json")]:
        assert isinstance(json.loads(marker.read_text()), dict), marker  # every marker there is whole
    assert not list(resume.stale_folder(out).glob(f"*/{resume.SET_ASIDE}"))
