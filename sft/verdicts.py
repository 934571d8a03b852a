"""An LLM as judge of the test replies (judge: of params.yaml, its schema in sft/judging.py): the
judge's prompts from a rubric template, its verdicts read and counted.

Two modes. `pairwise`: the base model's and the fine-tuned model's replies to the same test prompt
are shown to the judge side by side, each pair twice, once in each order; a verdict counts only
when both orders name the same reply, a pair that flips with the order is a tie (position bias
cancels), and the fine-tuned model's win rate is (wins + ties / 2) / pairs judged, with a 95%
bootstrap interval. `score`: each reply is rated 1-10 with the judge's short reason kept beside it;
the two models' mean scores are paired by item. A judge reply with no verdict, or with two
different ones, counts as no verdict: counted, never a crash, never a win.

The judge generates through the project's one generation entry point (sft/generation.py) and its
replies are kept like evaluate's (sft/replies.py), so a killed run asks nothing twice.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from sft.judging import JudgeParams
from sft.params import PARAMS_FILE, UserError

# What the rubric may read: the test prompt's question, the gold completion, and the replies.
VARIABLES = {"pairwise": {"question", "reference", "first", "second"}, "score": {"question", "reference", "reply"}}
PAIRWISE = re.compile(r"\[\[\s*(1|2|tie)\s*\]\]", re.IGNORECASE)  # [[1]], [[2]] or [[tie]]
RATING = re.compile(r"\[\[\s*(10|[1-9])\s*\]\]")  # [[1]] .. [[10]]
REASON_CHARS = 400  # the judge's words kept beside a verdict: their first characters


def settings_of(p: JudgeParams) -> dict:
    """What decides a verdict besides the judge and the prompts (the key of kept judge replies)."""
    return {k: v for k, v in asdict(p).items() if k not in ("hub", "folders")}


def rubric(path: str | Path, mode: str) -> jinja2.Template:
    """The rubric template, in jinja's immutable sandbox with undefined variables as errors; one
    that reads a variable the mode does not give is refused before the judge loads."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} (judge.rubric) is missing; write the judge's prompt there, e.g. "
                        "prompts/headnotes/judge.jinja")
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}); save the rubric as UTF-8") from None
    try:
        unknown = jinja2.meta.find_undeclared_variables(env.parse(source)) - VARIABLES[mode]
        template = env.from_string(source)
        template.name = str(path)
    except jinja2.TemplateSyntaxError as e:
        raise UserError(f"{path}:{e.lineno}: template syntax error: {e.message}") from None
    if unknown:
        raise UserError(f"{path}: reads {sorted(unknown)}, which judge.mode {mode} does not give; it may read "
                        f"{sorted(VARIABLES[mode])}")
    return template


def question(record: dict) -> str:
    """The test prompt as the judge reads it: its user turns (the last one is the question)."""
    return "\n\n".join(str(m.get("content", "")) for m in record["prompt"] if m.get("role") == "user")


def pairwise_prompts(template: jinja2.Template, records: list[dict], before: list[str], after: list[str],
                     reference: list[str]) -> list[list[dict]]:
    """Two judge prompts an item, base first then fine-tuned first: [item0 order1, item0 order2, ...]."""
    prompts = []
    for record, b, a, gold in zip(records, before, after, reference, strict=True):
        for first, second in ((b, a), (a, b)):
            prompts.append([{"role": "user", "content": rendered(template, question=question(record), reference=gold,
                                                                 first=first, second=second)}])
    return prompts


def score_prompts(template: jinja2.Template, records: list[dict], replies: list[str],
                  reference: list[str]) -> list[list[dict]]:
    return [[{"role": "user", "content": rendered(template, question=question(r), reference=gold, reply=reply)}]
            for r, reply, gold in zip(records, replies, reference, strict=True)]


def rendered(template: jinja2.Template, **values: str) -> str:
    """The rubric with one item's texts; any error (a refused attribute, a filter given the wrong
    type) is one line naming the rubric, never a crash mid-run."""
    try:
        return template.render(**values).strip()
    except Exception as e:  # noqa: BLE001 - the sandbox and jinja raise many kinds; each is this one line
        raise UserError(f"{template.name or 'judge.rubric'}: {type(e).__name__}: {str(e)[:300]}; fix the rubric") from None


def preference(reply: str) -> str | None:
    """'1', '2' or 'tie' from a judge's reply; None when it names none, or two different ones."""
    found = {m.lower() for m in PAIRWISE.findall(reply)}
    return found.pop() if len(found) == 1 else None


def rating(reply: str) -> tuple[int | None, str]:
    """The 1-10 rating in a judge's reply (None: none, or two different ones) and its reason: the
    text before the rating, its first characters."""
    found = set(RATING.findall(reply))
    if len(found) != 1:
        return None, reply.strip()[:REASON_CHARS]
    value = found.pop()
    reason = reply[: reply.find(f"[[{value}")].strip() if f"[[{value}" in reply else reply.strip()
    return int(value), reason[:REASON_CHARS]


def winner(base_first: str | None, tuned_first: str | None) -> str | None:
    """The item's outcome from its two verdicts (base shown first, then fine-tuned shown first):
    'finetuned', 'baseline' or 'tie'; None when either order gave no verdict."""
    if base_first is None or tuned_first is None:
        return None
    named = {"1": "baseline", "2": "finetuned", "tie": "tie"}[base_first], \
        {"1": "finetuned", "2": "baseline", "tie": "tie"}[tuned_first]
    return named[0] if named[0] == named[1] else "tie"  # a verdict that follows the order is no preference


def pairwise_figures(verdicts: list[tuple[str | None, str | None]]) -> tuple[dict, list[str | None]]:
    """The fine-tuned model's win rate over the pairs judged, its interval, and the counts."""
    from sft.stats import bootstrap_interval

    outcomes = [winner(b, a) for b, a in verdicts]
    judged = [{"finetuned": 1.0, "tie": 0.5, "baseline": 0.0}[o] for o in outcomes if o is not None]
    # No pair judged (a judge that never says a verdict): no rate, not a rate of 0.
    rate = round(sum(judged) / len(judged), 4) if judged else None
    low, high = (round(x, 4) for x in bootstrap_interval(judged)) if judged else (None, None)
    flipped = sum(1 for (b, a), o in zip(verdicts, outcomes, strict=True)
                  if o == "tie" and "tie" not in (b, a))
    return {"win_rate": rate, "win_rate_ci_low": low, "win_rate_ci_high": high,
            "items": len(verdicts), "judged": len(judged), "wins": outcomes.count("finetuned"),
            "losses": outcomes.count("baseline"), "ties": outcomes.count("tie"), "flipped_with_order": flipped,
            "no_verdict": outcomes.count(None)}, outcomes


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def score_figures(before: list[int | None], after: list[int | None]) -> dict:
    """Both models' mean ratings over the items both got one, paired, and the counts without one."""
    from sft.stats import paired_difference

    both = [(b, a) for b, a in zip(before, after, strict=True) if b is not None and a is not None]
    xs, ys = [float(b) for b, _ in both], [float(a) for _, a in both]
    return {"baseline_score": _mean(xs), "finetuned_score": _mean(ys), "items": len(before), "judged": len(both),
            "no_verdict_baseline": before.count(None), "no_verdict_finetuned": after.count(None),
            **(paired_difference(xs, ys, binary=False) if both else {})}


@dataclass
class Request:
    """What a judge stage is asked: which judge (its key under judge.<kind>) and where things are."""
    name: str
    kind: str  # hub | folders
    entry: dict | str  # hub: {model_name_or_path, revision}; folders: the folder
    data: Path
    predictions: Path
    out: Path
    params: JudgeParams


def request(kind: str, description: str) -> Request:
    """The stage's command line and params: `--name` must be a key of judge.<kind>."""
    import argparse

    from sft.params import load

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--name", required=True, help=f"its key under judge.{kind} of params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--predictions", default="metrics/predictions", help="baseline.jsonl and finetuned.jsonl")
    ap.add_argument("--out", default="metrics/judge")
    args = ap.parse_args()
    p = load("judge", JudgeParams)
    listed = getattr(p, kind)
    if args.name not in listed:
        raise UserError(f"{PARAMS_FILE}: judge.{kind} has no '{args.name}'")
    return Request(args.name, kind, listed[args.name], Path(args.data), Path(args.predictions), Path(args.out), p)


def judge_replies(judge_dir: str, prompts: list[list[dict]], r: Request) -> list[str]:
    """The judge's reply to every prompt, generated as evaluate generates (and kept as they come)."""
    from sft import device, generation, replies
    from sft.evaluation import GENERATION_CODE

    p = r.params
    backend = device.generation_backend(p.backend, stage="judge")
    kept = replies.Kept(r.out / "replies.partial", r.name,
                        replies.digest(judge_dir, prompts, {**settings_of(p), "backend": backend},
                                       [Path(m.__file__) for m in GENERATION_CODE]), len(prompts))
    known = kept.known()
    if len(known) == len(prompts):
        return [replies.as_text(known[i]) for i in range(len(prompts))]
    answered, _ = generation.replies(judge_dir, prompts, generation.Settings(p.max_new_tokens, p.batch_size, p.dtype),
                                     backend, known, kept.keep, f"[judge] {r.name}: judging")
    return [replies.as_text(a) for a in answered]


def judge_and_write(r: Request, judge_dir: str, identity: dict) -> dict:
    """Judge the base and fine-tuned replies to the test prompts and write out/<name>.json (the
    figures, the judge and how it was asked) and out/verdicts/<name>.jsonl (each item's verdicts
    and the judge's words)."""
    from sft.files import read_jsonl, write_json, write_jsonl
    from sft.pairing import paired
    from sft.scoring import gold

    p = r.params
    template = rubric(p.rubric, p.mode)  # before the judge loads: a bad rubric fails at once
    records = read_jsonl(r.data / "test.jsonl")[: p.max_items]
    by_id = {b["id"]: (b["prediction"], a["prediction"])
             for b, a in paired(r.predictions / "baseline.jsonl", r.predictions / "finetuned.jsonl")}
    before, after = zip(*(by_id[x["id"]] for x in records), strict=True) if records else ((), ())
    golds = [gold(x) for x in records]
    print(f"[judge] {r.name}: {p.mode}, {len(records)} test items, rubric {p.rubric}", flush=True)
    if p.mode == "pairwise":
        asked = [i for i in range(len(records)) if before[i].strip() != after[i].strip()]  # the same reply: a tie
        said = judge_replies(judge_dir, pairwise_prompts(template, [records[i] for i in asked], [before[i] for i in asked],
                                                         [after[i] for i in asked], [golds[i] for i in asked]), r)
        verdicts = [("tie", "tie")] * len(records)
        words = [("", "")] * len(records)
        for k, i in enumerate(asked):
            verdicts[i] = (preference(said[2 * k]), preference(said[2 * k + 1]))
            words[i] = (said[2 * k][:REASON_CHARS], said[2 * k + 1][:REASON_CHARS])
        figures, outcomes = pairwise_figures(verdicts)
        rows = [{"id": x["id"], "base_first": v[0], "finetuned_first": v[1], "outcome": o, "asked": i in asked,
                 "judge_base_first": w[0], "judge_finetuned_first": w[1]}
                for i, (x, v, o, w) in enumerate(zip(records, verdicts, outcomes, words, strict=True))]
    else:
        said = judge_replies(judge_dir, score_prompts(template, records, list(before), golds)
                             + score_prompts(template, records, list(after), golds), r)
        rated = [rating(s) for s in said]
        b, a = rated[: len(records)], rated[len(records):]
        figures = score_figures([x[0] for x in b], [x[0] for x in a])
        rows = [{"id": x["id"], "baseline_score": rb[0], "baseline_reason": rb[1], "finetuned_score": ra[0],
                 "finetuned_reason": ra[1]} for x, rb, ra in zip(records, b, a, strict=True)]
    result = {"judge": identity, "mode": p.mode, "rubric": p.rubric, **figures}
    write_jsonl(r.out / "verdicts" / f"{r.name}.jsonl", rows)
    write_json(r.out / f"{r.name}.json", result)
    print(f"[judge] {r.name}: {figures}", flush=True)
    return result
