"""Progress of long work outside training (generation, scoring), with a rate and an ETA: a tqdm bar
on a terminal; in a log (CI, `dvc repro > log`) one line per tenth of the work, so a log shows
progress without a line per prompt. Training has its own bar (sft/tracking.py)."""

from __future__ import annotations

import sys
import time

STEPS = 10  # log lines per piece of work when not on a terminal


class Progress:
    """`update(done, tokens)` as work ends; `tokens` gives the bar a tokens-per-second figure."""

    def __init__(self, total: int, what: str, unit: str = "prompt", stream=None):
        self.total, self.what, self.unit = total, what, unit
        self.stream = stream or sys.stderr
        self.done = self.tokens = self.logged = 0
        self.started = time.monotonic()
        self.bar = None
        if total and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit=unit, file=self.stream, dynamic_ncols=True)

    def update(self, done: int = 1, tokens: int = 0) -> None:
        self.done, self.tokens = self.done + done, self.tokens + tokens
        if self.bar is not None:
            if self.tokens:
                self.bar.set_postfix_str(f"{self.tokens / self.elapsed():,.0f} tok/s", refresh=False)
            self.bar.update(done)
        elif self.total and self.done * STEPS // self.total > self.logged:
            self.logged = self.done * STEPS // self.total
            print(self.line(), file=self.stream, flush=True)

    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        seconds = self.elapsed()
        left = seconds * (self.total - self.done) / self.done
        rate = f", {self.tokens / seconds:,.0f} tok/s" if self.tokens else ""
        return (f"{self.what}: {self.done}/{self.total} {self.unit}s ({100 * self.done // self.total}%), "
                f"{clock(seconds)} elapsed{rate}, ETA {clock(left)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}" if minutes < 60 else f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def throughput(new_tokens: int, seconds: float) -> dict:
    """A generation's speed figures (metrics/speed/: never in a hashed output)."""
    return {"generated_tokens": new_tokens, "generation_seconds": round(seconds, 1),
            "tokens_per_second": round(new_tokens / max(seconds, 1e-9), 1)}
