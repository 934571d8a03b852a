"""make sweep and make seeds (apps/experiments.py): a grid queued and run by DVC's own queue on the
tiny graph, ranked by the validation figure alone, failed experiments listed; the spread across
seeds; and the ranking and summary rules on their own."""

import json
import os
import subprocess
import sys

import pytest
from conftest import dvc, run_copy

from apps import experiments as ex
from sft.params import UserError

PARAMS = {"train": {"seed": 42, "learning_rate": 1e-3}, "select": {"metric": "eval_loss"}, "evaluate": {"batch_size": 8}}


def test_a_grid_names_sections_and_keys_params_yaml_has():
    words = ["train.learning_rate=1e-4,3e-4", "train.lora_r=8,16", "evaluate.batch_size=4"]
    assert ex.overrides("  ".join(words), PARAMS) == words
    for grid, said in [("", "GRID is empty"), ("learning_rate=1e-4", "not section.key=value"),
                       ("trian.seed=1,2", "no section 'trian'"), ("evaluate.batchsize=4", "no key evaluate.batchsize")]:
        with pytest.raises(UserError, match=said):
            ex.overrides(grid, PARAMS)


def test_a_sharded_grid_gives_each_machine_a_disjoint_share_under_one_name():
    words = ["train.learning_rate=1e-4,3e-4,1e-3", "train.lora_r=8,16"]
    combos = ex.combinations(words)
    assert combos[:2] == [["train.learning_rate=1e-4", "train.lora_r=8"], ["train.learning_rate=1e-4", "train.lora_r=16"]]
    assert len(combos) == 6 and len({tuple(c) for c in combos}) == 6
    shares = [[place for place in range(1, 7) if (place - 1) % 4 == i - 1] for i in range(1, 5)]
    assert sorted(sum(shares, [])) == list(range(1, 7)) and [len(s) for s in shares] == [2, 2, 1, 1]
    assert ex.grid_name(words) == ex.grid_name(list(words)) != ex.grid_name(words[:1])  # every machine agrees
    assert ex.shard_of("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(UserError, match="is not i/N"):
            ex.shard_of(bad)


def experiment(name, state="success", seed=42, loss=None, finetuned=None, difference=None, metric="eval_loss",
               greater=None):
    metrics = {}
    if loss is not None:
        metrics["metrics/select.json"] = {metric: loss}
    if finetuned is not None:
        metrics["metrics/finetuned.json"] = {"accuracy": finetuned, "accuracy_ci_low": finetuned - 0.1,
                                             "accuracy_ci_high": finetuned + 0.1}
        metrics["metrics/compare.json"] = {"metric": "accuracy", "baseline": finetuned - difference,
                                           "difference": difference, "difference_ci_low": difference - 0.05,
                                           "difference_ci_high": difference + 0.05}
    select = {"metric": metric, **({"greater_is_better": greater} if greater is not None else {})}
    return {"name": name, "state": state, "params": {"train": {"seed": seed}, "select": select}, "metrics": metrics}


def test_the_sweep_is_ranked_by_validation_and_only_the_chosen_shows_a_test_figure():
    runs = [experiment("sweep-1-1", seed=1, loss=0.50, finetuned=0.90, difference=0.40),  # best on test
            experiment("sweep-1-2", seed=2, loss=0.30, finetuned=0.70, difference=0.20),  # best on validation
            experiment("sweep-1-3", state="failed", seed=3),
            experiment("sweep-1-4", seed=4, loss=0.40, finetuned=0.80, difference=0.30)]
    table = ex.ranked(runs, ["train.seed"])
    assert [r["name"] for r in table["rows"]] == ["sweep-1-2", "sweep-1-4", "sweep-1-1", "sweep-1-3"]
    assert table["chosen"] == "sweep-1-2" and table["chosen_test"]["finetuned"] == 0.70
    assert table["rows"][-1]["state"] == "failed" and table["rows"][-1]["eval_loss"] is None
    assert not any("finetuned" in r or "difference" in r for r in table["rows"])  # no test figure in the ranking
    text = ex.sweep_markdown("sweep-1", table, ["train.seed"])
    assert text.count("accuracy") == 1 and "dvc exp apply sweep-1-2" in text and "| sweep-1-3 | failed |" in text
    # A figure where higher is better (select.metric: accuracy) ranks the other way.
    up = [experiment(n, loss=v, metric="accuracy") for n, v in (("a", 0.2), ("b", 0.6))]
    assert ex.ranked(up, [])["chosen"] == "b"


def test_the_seed_summary_says_whether_the_gain_exceeds_the_seed_spread():
    runs = [experiment(f"seeds-1-{i}", seed=s, finetuned=f, difference=d)
            for i, (s, f, d) in enumerate([(42, 0.84, 0.79), (43, 0.80, 0.75), (44, 0.82, 0.77)], 1)]
    s = ex.seeds_summary(runs + [experiment("seeds-1-4", state="failed", seed=45)])
    assert [r["seed"] for r in s["seeds"]] == [42, 43, 44] and s["failed"] == ["seeds-1-4"]
    assert s["difference_mean"] == pytest.approx(0.77) and s["difference_sd"] == pytest.approx(0.02)
    assert s["gain_exceeds_seed_spread"] and s["one_run"]["seed"] == 42
    assert "exceeds the seed spread" in ex.seeds_markdown("seeds-1", s)
    noisy = ex.seeds_summary([experiment("n-1", seed=1, finetuned=0.5, difference=0.10),
                              experiment("n-2", seed=2, finetuned=0.3, difference=-0.06)])
    assert not noisy["gain_exceeds_seed_spread"] and "does not exceed" in ex.seeds_markdown("n", noisy)
    assert ex.free_name("sweep", {"sweep-1-1", "sweep-2", "seeds-3-1"}) == "sweep-3"


@pytest.mark.slow
def test_a_sweep_runs_through_dvcs_queue_and_a_failed_experiment_stays_listed(local_sweep, tmp_path):
    """Three experiments of the tiny graph queued by `make sweep`'s module (conftest's local_sweep):
    1 and 2 epochs (2 is the committed run: DVC's run-cache restores it), and 0, which train
    refuses (the same grid as test_slurm's). The report ranks the two that ran by validation loss and
    lists the failed one; an applied experiment's figures stand beside the commit's (exp show,
    metrics diff, plots).
    The reports are read in the shared run (a report only adds its folder); `exp apply` in a copy."""
    repo = local_sweep
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}

    def experiments_module(*args):
        done = subprocess.run([sys.executable, "-m", "apps.experiments", *args], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    table = json.loads((repo / "reports" / "sweep-1" / "report.json").read_text())
    states = {r["name"]: (r["state"], r["train.epochs"]) for r in table["rows"]}
    assert len(states) == 3, table
    assert sorted(v for v in states.values() if v[0] == "success") == [("success", 1), ("success", 2)]
    assert [(v[1], r["eval_loss"]) for v, r in zip(states.values(), table["rows"], strict=True) if v[0] != "success"] \
        == [(0, None)]  # a failed experiment shows no figure (DVC gives it the baseline's)
    ran = [r for r in table["rows"] if r["state"] == "success"]
    assert ran == table["rows"][:2] and ran[0]["eval_loss"] <= ran[1]["eval_loss"] and table["chosen"] == ran[0]["name"]
    assert table["chosen_test"]["metric"] == "execution_accuracy"
    assert all(isinstance(r["general_text_loss_change"], float) for r in ran)  # each experiment ran forgetting too
    assert (repo / "reports" / "sweep-1" / "chart.png").read_bytes()[:4] == b"\x89PNG"
    assert "<script src" not in (repo / "reports" / "sweep-1" / "index.html").read_text()

    said = experiments_module("report", "sweep-1", "--as", "seeds")  # the same experiments read as seeds
    summary = json.loads((repo / "reports" / "sweep-1-as-seeds" / "report.json").read_text())
    assert len(summary["seeds"]) == 2 and len(summary["failed"]) == 1 and "seed spread" in said

    # `dvc exp apply`, as the report says, here of the 1-epoch experiment: its figures against the commit's.
    one_epoch = next(name for name, v in states.items() if v == ("success", 1))
    repo = run_copy(local_sweep, tmp_path / "repo")
    dvc(repo, "exp", "apply", one_epoch)
    assert json.loads((repo / "metrics" / "train.json").read_text())["global_step"] == 2
    diff = json.loads(dvc(repo, "metrics", "diff", "--json"))
    assert diff["metrics/train.json"]["global_step"] == {"old": 4, "new": 2, "diff": -2}
    assert "execution_accuracy" in dvc(repo, "metrics", "show")
    [plot] = json.loads(dvc(repo, "plots", "show", "--json"))["data"]["loss"]
    points = {(p["filename"], int(p["step"])) for p in plot["content"]["data"]["values"]}
    assert {("eval/loss.tsv", 2), ("train/loss.tsv", 1), ("train/loss.tsv", 2)} <= points  # the 1-epoch run


def test_a_look_at_the_queue_that_hangs_is_killed_and_asked_again(monkeypatch, capsys):
    """`dvc exp show` can block for good reading a running experiment's metrics (pygit2's blob
    reader, seen in a sweep): a look with no answer is killed (run()'s timeout) and asked again;
    looks that never answer end in one line, not a wait without end."""
    answers = iter([subprocess.TimeoutExpired("dvc", ex.SHOW_SECONDS), subprocess.CompletedProcess([], 0, "[]", "")])

    def look(*args, check=True, timeout=None):
        assert args == ("exp", "show", "--json") and timeout == ex.SHOW_SECONDS
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(ex, "dvc", look)
    assert ex.finished("sweep-1") is True
    assert f"dvc exp show: no answer in {ex.SHOW_SECONDS} s; asking again" in capsys.readouterr().out

    def hangs(*args, check=True, timeout=None):
        raise subprocess.TimeoutExpired("dvc", timeout)

    monkeypatch.setattr(ex, "dvc", hangs)
    with pytest.raises(UserError, match="failed 3 times in a row: no answer in"):
        ex.finished("sweep-1", tries=3)
