"""make sweep and make seeds: experiments queued and run by DVC's own queue, then one report.

    make sweep GRID="train.learning_rate=1e-4,3e-4 train.lora_r=8,16" [JOBS=1]
    make seeds N=3 [JOBS=1]
    make sweep-report NAME=sweep-1   # the report again, from the experiments DVC keeps (AS=seeds: as seeds)

    # past one machine: the i-th share of the grid on each of N machines, each pushing its experiments
    make sweep GRID="..." SHARD=1/2 PUSH=origin      # machine 1 (and SHARD=2/2 on machine 2)
    make sweep-report NAME=sweep-<grid id> PULL=origin  # any machine: pull every share, one report

A sweep queues every combination of GRID under one name (`dvc exp run --queue -n sweep-<k>
-S key=v1,v2`, DVC's own grid syntax: sweep-<k>-1, sweep-<k>-2, ...), runs the queue with `dvc
queue start -j JOBS` and waits for it, and ranks the experiments by the validation figure select
chose its checkpoint by (`select.metric`), never by a test figure: the test figure is shown for
the chosen experiment alone. `dvc exp apply <name>` makes it the workspace. Seeds queues N
experiments that differ only in `train.seed` and reports the spread of the test figure and of
the fine-tuned-minus-baseline difference across seeds beside one run's own interval.

A sharded sweep (`--shard i/N`) queues the combinations whose place in the grid (in GRID's order,
the last key fastest) is i modulo N, each on its own, named after the grid so every machine agrees:
sweep-<grid id>-<place>. `--push REMOTE` sends them to the git remote (`dvc exp push`: their
commits to git, their outputs and the run-cache to the DVC remote); a report with `--pull REMOTE`
first pulls every experiment of that name (`dvc exp pull`), so it ranks all the shares together.
The machines must share the commit the sweep starts from (pushed to the git remote first).

Every experiment runs the graph up to `compare` and `forgetting`. Reports go to reports/<name>/: report.md and
report.json, and for a sweep chart.png and index.html, drawn offline. Failed experiments are
listed as failed. Not a stage: what it reads is what DVC keeps of each experiment.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from sft.files import write_json, write_text
from sft.metrics import greater_is_better
from sft.params import UserError, read_yaml, run

TARGETS = ("compare", "forgetting")  # what each experiment runs: validation and test figures, the general-text loss; no export
SEED = "train.seed"
POLL_SECONDS = 3  # how often the queue's experiments are looked at while they run
SHOW_SECONDS = 120  # the longest one look may take (a few seconds when it answers at all)


def dvc(*args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(["dvc", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise UserError(f"dvc {' '.join(args)} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return done


def overrides(grid: str, params: dict) -> list[str]:
    """GRID's `section.key=v1,v2` words, each naming a section of params.yaml and one of its keys
    (any SFTConfig argument under train:)."""
    words = grid.split()
    if not words:
        raise UserError('GRID is empty: make sweep GRID="train.learning_rate=1e-4,3e-4 train.lora_r=8,16"')
    for word in words:
        m = re.fullmatch(r"(\w+)\.([\w.]+)=(.+)", word)
        if not m:
            raise UserError(f"GRID: '{word}' is not section.key=value[,value...] (e.g. train.learning_rate=1e-4,3e-4)")
        section, key = m.group(1), m.group(2).split(".")[0]
        if section not in params:
            raise UserError(f"GRID: '{word}': params.yaml has no section '{section}' ({', '.join(params)})")
        if section != "train" and key not in params[section]:
            raise UserError(f"GRID: '{word}': params.yaml has no key {section}.{key}")
    return words


def combinations(words: list[str]) -> list[list[str]]:
    """Every combination of the grid's values, one `key=value` a key, in GRID's order (the last key fastest)."""
    keys = [w.split("=", 1) for w in words]
    return [[f"{k}={v}" for (k, _), v in zip(keys, values, strict=True)]
            for values in itertools.product(*(vs.split(",") for _, vs in keys))]


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def shard_of(text: str) -> tuple[int, int]:
    """SHARD=i/N as (i, N), 1 <= i <= N."""
    m = re.fullmatch(r"(\d+)/(\d+)", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise UserError(f"SHARD '{text}' is not i/N with 1 <= i <= N (e.g. SHARD=1/2 on one machine, SHARD=2/2 on the other)")
    return int(m.group(1)), int(m.group(2))


def grid_name(words: list[str], kind: str = "sweep") -> str:
    """The same name on every machine (or Slurm task) that runs a share of this grid."""
    return f"{kind}-" + hashlib.sha256(" ".join(words).encode()).hexdigest()[:8]


def shown() -> list[dict]:
    return json.loads(dvc("exp", "show", "--json").stdout or "[]")


def experiments(show: list[dict]) -> list[dict]:
    """Every experiment DVC keeps for the commits shown: name, state, params and metrics."""
    found = []
    for commit in show:
        for entry in commit.get("experiments") or []:
            state = (entry.get("executor") or {}).get("state") or "success"
            revs = entry.get("revs") or [{}]
            data = revs[0].get("data") or {}
            found.append({"name": entry.get("name") or revs[0].get("name"), "state": state,
                          "params": (data.get("params") or {}).get("params.yaml", {}).get("data", {}),
                          "metrics": {path: item.get("data", {}) for path, item in (data.get("metrics") or {}).items()}})
    return found


def free_name(kind: str, names: set[str]) -> str:
    n = 1
    while any(name == f"{kind}-{n}" or name.startswith(f"{kind}-{n}-") for name in names):
        n += 1
    return f"{kind}-{n}"


def of_run(name: str, show: list[dict]) -> list[dict]:
    return [e for e in experiments(show) if e["name"] == name or (e["name"] or "").startswith(f"{name}-")]


def value(tree: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def validation(e: dict) -> tuple[str, bool, float | None]:
    """select's metric, whether greater is better, and this experiment's value of it."""
    metric = value(e["params"], "select.metric") or "eval_loss"
    greater = value(e["params"], "select.greater_is_better")
    greater = greater_is_better(metric) if greater is None else bool(greater)
    figure = value(e["metrics"].get("metrics/select.json", {}), metric)
    return metric, greater, figure if isinstance(figure, int | float) and math.isfinite(figure) else None


def test_figures(e: dict) -> dict:
    """The headline test figure with its interval, and the paired difference to the baseline."""
    compare = e["metrics"].get("metrics/compare.json", {})
    finetuned = e["metrics"].get("metrics/finetuned.json", {})
    metric = compare.get("metric")
    if not metric or metric not in finetuned:
        return {}
    return {"metric": metric, "finetuned": finetuned[metric], "finetuned_ci": [finetuned.get(f"{metric}_ci_low"),
                                                                           finetuned.get(f"{metric}_ci_high")],
            "baseline": compare.get("baseline"), "difference": compare.get("difference"),
            "difference_ci": [compare.get("difference_ci_low"), compare.get("difference_ci_high")]}


def ranked(runs: list[dict], keys: list[str]) -> dict:
    """The sweep's table, best validation figure first; failed or unscored experiments last."""
    metric, greater, _ = validation(runs[0])
    scored, unscored = [], []
    for e in runs:
        # A failed experiment has no figures of its own: DVC shows it the baseline's files.
        figure = validation(e)[2] if e["state"] == "success" else None
        own = e["metrics"] if e["state"] == "success" else {}
        row = {"name": e["name"], "state": e["state"], **{k: value(e["params"], k) for k in keys}, metric: figure,
               "train_seconds": own.get("metrics/speed/train.json", {}).get("train_seconds"),
               "global_step": own.get("metrics/train.json", {}).get("global_step"),
               "general_text_loss_change": own.get("metrics/forgetting.json", {}).get("difference"),
               **({"log": e["log"]} if e.get("log") else {})}
        (scored if figure is not None and e["state"] == "success" else unscored).append((row, e))
    if not scored:
        return {"rows": [row for row, _ in unscored], "chosen": None}
    scored.sort(key=lambda pair: (-pair[0][metric] if greater else pair[0][metric], pair[0]["name"]))
    chosen, chosen_run = scored[0]
    return {"rows": [row for row, _ in scored + unscored], "metric": metric, "greater_is_better": greater,
            "chosen": chosen["name"], "chosen_test": test_figures(chosen_run)}


def seeds_summary(runs: list[dict]) -> dict:
    """Mean and standard deviation across seeds of the test figure and of the difference."""
    done = [(value(e["params"], SEED), test_figures(e)) for e in runs if e["state"] == "success"]
    done = [(seed, t) for seed, t in done if t]
    rows = [{"seed": seed, "finetuned": t["finetuned"], "difference": t["difference"]} for seed, t in done]
    summary = {"seeds": rows, "failed": [e["name"] for e in runs if e["state"] != "success"],
               **({"logs": logs} if (logs := {e["name"]: e["log"] for e in runs if e.get("log")}) else {})}
    if len(rows) < 2:
        return summary
    fig, diff = [r["finetuned"] for r in rows], [r["difference"] for r in rows]
    one = done[0][1]
    summary.update(metric=one["metric"], finetuned_mean=statistics.mean(fig), finetuned_sd=statistics.stdev(fig),
                   difference_mean=statistics.mean(diff), difference_sd=statistics.stdev(diff),
                   one_run={"seed": done[0][0], "finetuned_ci": one["finetuned_ci"],
                            "difference_ci": one["difference_ci"]})
    # Two standard deviations: a gain that large is unlikely to be one lucky draw of the seed.
    summary["gain_exceeds_seed_spread"] = summary["difference_mean"] - 2 * summary["difference_sd"] > 0
    return summary


def sweep_markdown(name: str, table: dict, keys: list[str]) -> str:
    if table["chosen"] is None:
        logs = "".join(f"- {r['name']}: its log {r['log']}\n" for r in table["rows"] if r.get("log"))
        return f"# {name}\n\nNo experiment finished with a validation figure: see `dvc queue logs <name>`.\n" + \
            (f"\n{logs}" if logs else "")
    metric = table["metric"]
    head = ["experiment", "state", *keys, f"{metric} (validation)", "train s", "general-text loss change"]
    lines = [f"# {name}", "", f"Ranked by `{metric}` on the validation split "
             f"({'higher' if table['greater_is_better'] else 'lower'} is better), as select chose checkpoints. "
             "No test figure takes part in the choice.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table["rows"]:
        cells = [r["name"], r["state"], *[json.dumps(r[k]) for k in keys],
                 "" if r[metric] is None else f"{r[metric]:.4f}", "" if r["train_seconds"] is None else str(r["train_seconds"]),
                 "" if r["general_text_loss_change"] is None else f"{r['general_text_loss_change']:+.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if logs := [f"- {r['name']} left no result: its log {r['log']}" for r in table["rows"] if r.get("log")]:
        lines += ["", *logs]
    t = table["chosen_test"]
    lines += ["", f"Chosen: **{table['chosen']}**. Make it the workspace: `dvc exp apply {table['chosen']}`.", ""]
    if t:
        lines.append(f"Its test figure, shown for the chosen experiment only: {t['metric']} {t['finetuned']:.4f} "
                     f"[{t['finetuned_ci'][0]}, {t['finetuned_ci'][1]}], {t['difference']:+.4f} against the "
                     f"baseline [{t['difference_ci'][0]}, {t['difference_ci'][1]}].")
    return "\n".join(lines) + "\n"


def seeds_markdown(name: str, s: dict) -> str:
    lines = [f"# {name}", "", "| seed | test figure | fine-tuned - baseline |", "|---|---|---|"]
    lines += [f"| {r['seed']} | {r['finetuned']:.4f} | {r['difference']:+.4f} |" for r in s["seeds"]]
    if s["failed"]:
        lines += ["", f"Failed: {', '.join(s['failed'])} (`dvc queue logs <name>`)."]
        lines += [f"- {n}: its log {log}" for n, log in s.get("logs", {}).items()]
    if "difference_mean" in s:
        o = s["one_run"]
        verdict = "exceeds" if s["gain_exceeds_seed_spread"] else "does not exceed"
        lines += ["", f"{s['metric']}: {s['finetuned_mean']:.4f} ± {s['finetuned_sd']:.4f} (mean ± sd over "
                  f"{len(s['seeds'])} seeds); one run's 95% interval (seed {o['seed']}): {o['finetuned_ci']}.",
                  f"Gain over the baseline: {s['difference_mean']:+.4f} ± {s['difference_sd']:.4f}; one run's "
                  f"interval: {o['difference_ci']}.", "",
                  f"The gain {verdict} the seed spread (mean difference minus two standard deviations "
                  f"{'>' if s['gain_exceeds_seed_spread'] else '<='} 0)."]
    return "\n".join(lines) + "\n"


def chart(name: str, table: dict, out: Path) -> None:
    """The validation figure per experiment, as a PNG and a page that opens offline."""
    import vl_convert

    from sft.plots import DVC_PLACEHOLDER, offline_template, with_font

    metric = table["metric"]
    values = [{"experiment": r["name"], metric: r[metric]} for r in table["rows"] if r[metric] is not None]
    spec = with_font({"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "title": f"{name}: {metric} "
                      "(validation)", "width": 480, "height": 240, "data": {"values": values}, "mark": "bar",
                      "encoding": {"x": {"field": "experiment", "type": "nominal", "sort": None},
                                   "y": {"field": metric, "type": "quantitative", "scale": {"zero": False}}}})
    (out / "chart.png").write_bytes(vl_convert.vegalite_to_png(spec, scale=2))
    body = f'<div id="chart"></div>\n<script>vegaEmbed("#chart", {json.dumps(spec)});</script>'
    write_text(out / "index.html", offline_template().replace(DVC_PLACEHOLDER, body))


def report(name: str, kind: str | None = None, out_dir: str = "reports", missing: list[dict] = ()) -> Path:
    """reports/<name>/ for the experiments named <name> or <name>-<n>; `kind` (sweep or seeds)
    defaults to the name's own. `missing`: experiments that were meant to run and left no result
    (a Slurm task that failed), listed as failed, each with its params and log."""
    if not RUN_NAME.fullmatch(name):  # it names a folder under reports/, never a path
        raise UserError(f"NAME {name[:80]!r} is no sweep or seeds run: sweep-<k> or seeds-<k>, as `make sweep` printed "
                        "(letters, digits, '.', '_', '-')")
    runs = of_run(name, shown()) + list(missing)
    if not runs:
        raise UserError(f"no experiment named {name} or {name}-<n>: see `dvc exp show`")
    own = name.split("-")[0]
    out = Path(out_dir) / (name if kind in (None, own) else f"{name}-as-{kind}")
    out.mkdir(parents=True, exist_ok=True)
    if (kind or own) == "seeds":
        summary = seeds_summary(runs)
        write_json(out / "report.json", summary)
        write_text(out / "report.md", seeds_markdown(name, summary))
    else:
        keys = grid_keys(runs)
        table = ranked(runs, keys)
        write_json(out / "report.json", table)
        write_text(out / "report.md", sweep_markdown(name, table, keys))
        if table["chosen"] is not None:
            chart(name, table, out)
    print((out / "report.md").read_text(), flush=True)
    return out


def flat(tree: dict, prefix: str = "") -> dict:
    """Nested params as dotted keys: {"train": {"seed": 1}} -> {"train.seed": 1}."""
    out = {}
    for k, v in tree.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def grid_keys(runs: list[dict]) -> list[str]:
    """The dotted params whose values differ between the run's experiments: the grid's keys."""
    params = [flat(e["params"]) for e in runs]
    keys = sorted(set().union(*params))
    return [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in params}) > 1]


def finished(name: str, tries: int = 20) -> bool:
    """Whether every experiment of the run has ended. `dvc exp show` can fail while a worker removes
    the folder an experiment ran in (seen: "directory '.dvc/tmp/exps/tmp.../.dvc' does not exist"),
    or hang reading a running experiment's metrics (seen: blocked for good in pygit2's blob reader,
    2026-12-08); a failed or unanswered one is asked again, up to `tries` times in a row."""
    said = ""
    for _ in range(tries):
        try:
            done = dvc("exp", "show", "--json", check=False, timeout=SHOW_SECONDS)
        except subprocess.TimeoutExpired:  # run() has killed it
            said = f"no answer in {SHOW_SECONDS} s"
            print(f"[experiments] dvc exp show: {said}; asking again", flush=True)
            continue
        if done.returncode == 0:
            return not any(e["state"] in ("queued", "running") for e in of_run(name, json.loads(done.stdout or "[]")))
        said = (done.stderr or done.stdout).strip()[-300:]
        time.sleep(POLL_SECONDS)
    raise UserError(f"dvc exp show failed {tries} times in a row: {said}")


def start_workers(jobs: int) -> None:
    """`dvc queue start`, its output to a file: the workers it leaves running inherit its stdout
    and stderr, and a pipe to them would stay open (and a read of it blocked) while any lives."""
    with tempfile.TemporaryFile("w+") as out:
        done = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], stdout=out, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            out.seek(0)
            raise UserError(f"dvc queue start -j {jobs} failed: {out.read().strip().splitlines()[-1:]}")


def share_cpus(jobs: int) -> None:
    """JOBS experiments at a time share the cores: each gets its share (SFT_CPUS, which train
    reads, and OMP_NUM_THREADS for the other stages), and OpenMP threads that wait yield the core
    instead of spinning. Two experiments of 2 threads each on 2 cores ran 5-15x slower."""
    if jobs < 2:
        return
    share = str(max(1, len(os.sched_getaffinity(0)) // jobs))
    os.environ.update(SFT_CPUS=share, OMP_NUM_THREADS=share)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    print(f"[experiments] {jobs} at a time: {share} CPU(s) each (SFT_CPUS, OMP_NUM_THREADS)", flush=True)


def queue_and_run(kind: str, words: list[str], jobs: int, shard: tuple[int, int] | None = None) -> str:
    if shard is None:
        name = free_name(kind, {e["name"] for e in experiments(shown()) if e["name"]})
        print(f"[{kind}] queueing {name}: {' '.join(words)} (dvc exp run --queue, up to {' and '.join(TARGETS)})",
              flush=True)
        dvc("exp", "run", "--queue", "-n", name, *TARGETS, *[x for w in words for x in ("-S", w)])
    else:
        name, (i, n) = grid_name(words), shard
        mine = [(place, combo) for place, combo in enumerate(combinations(words), 1) if (place - 1) % n == i - 1]
        print(f"[{kind}] queueing share {i}/{n} of {name}: {len(mine)} experiments", flush=True)
        for place, combo in mine:
            dvc("exp", "run", "--queue", "-n", f"{name}-{place}", *TARGETS, *[x for w in combo for x in ("-S", w)])
    share_cpus(jobs)
    # `dvc queue start` and a wait of our own: `dvc exp run --run-all -j 2` was seen waiting on, for
    # 15 minutes, an experiment its other worker had already finished.
    start_workers(jobs)
    while not finished(name):
        time.sleep(POLL_SECONDS)
    # An experiment shows as ended before its worker has removed the folder it ran in; DVC's next
    # read of the experiments (exp show, exp push) fails if it meets that folder half removed.
    deadline = time.time() + 60
    while list(Path(".dvc/tmp/exps").glob("tmp*")) and time.time() < deadline:
        time.sleep(1)
    failed = [e["name"] for e in of_run(name, shown()) if e["state"] != "success"]
    if failed:
        print(f"[{kind}] failed: {', '.join(failed)} (listed as failed; `dvc queue logs <name>` says why)", flush=True)
    return name


def push(name: str, remote: str) -> None:
    """This machine's experiments of the run to the git remote, their outputs and the run-cache to the DVC remote."""
    names = sorted(e["name"] for e in of_run(name, shown()) if e["state"] == "success")
    print(f"[sweep] pushing {len(names)} experiments to {remote}: {', '.join(names)}", flush=True)
    if names:
        dvc("exp", "push", "--run-cache", remote, *names)


def pull(name: str, remote: str) -> None:
    """Every experiment of the run that the git remote holds, with its outputs (dvc exp show reads its metrics)."""
    listed = dvc("exp", "list", remote, "--name-only").stdout.split()
    names = sorted(x for x in listed if x == name or x.startswith(f"{name}-"))
    if not names:
        raise UserError(f"{remote} holds no experiment named {name}-<n> for this commit: see `dvc exp list {remote}`")
    print(f"[sweep] pulling {len(names)} experiments from {remote}: {', '.join(names)}", flush=True)
    dvc("exp", "pull", remote, *names)


def main() -> None:
    ap = argparse.ArgumentParser(description="Sweeps and seed repeats through DVC's queue, and their reports.")
    sub = ap.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep", help="queue and run a grid, then rank it by the validation figure")
    sweep.add_argument("--grid", required=True, help='"train.learning_rate=1e-4,3e-4 train.lora_r=8,16"')
    sweep.add_argument("--shard", help="i/N: run only the i-th of N shares of the grid (one a machine)")
    sweep.add_argument("--push", metavar="REMOTE", help="then push this machine's experiments to this git remote")
    seeds = sub.add_parser("seeds", help="N experiments differing only in train.seed, then their spread")
    seeds.add_argument("--n", type=int, default=3)
    for p in (sweep, seeds):
        p.add_argument("--jobs", type=int, default=1, help="experiments at a time (memory allowing)")
    again = sub.add_parser("report", help="the report of an earlier sweep or seeds run, again")
    again.add_argument("name", help="sweep-<k> or seeds-<k>")
    again.add_argument("--as", dest="kind", choices=("sweep", "seeds"), help="report it as this kind")
    again.add_argument("--pull", metavar="REMOTE", help="first pull every experiment of that name from this git remote")
    args = ap.parse_args()

    params = read_yaml("params.yaml")
    if args.command == "report":
        if args.pull:
            pull(args.name, args.pull)
        report(args.name, args.kind)
        return
    if args.jobs < 1:
        raise UserError("JOBS must be at least 1")
    if args.command == "sweep":
        shard = shard_of(args.shard) if args.shard else None
        name = queue_and_run("sweep", overrides(args.grid, params), args.jobs, shard)
        if args.push:
            push(name, args.push)
        if shard is not None and shard[1] > 1:
            print(f"[sweep] share {shard[0]}/{shard[1]} done; with every share pushed: make sweep-report NAME={name} "
                  f"PULL={args.push or '<git remote>'}", flush=True)
    else:
        if args.n < 2:
            raise UserError("N must be at least 2: one seed has no spread")
        first = int(value(params, SEED) or 42)
        name = queue_and_run("seeds", [f"{SEED}={','.join(str(first + i) for i in range(args.n))}"], args.jobs)
    report(name)


if __name__ == "__main__":
    run(main)
