"""Confidence intervals and paired tests for evaluation figures (standard library only).

Accuracy-like figures (0/1 a record) get the Wilson score interval and, for two models on the
same items, an exact McNemar test on the discordant pairs. Continuous figures (ROUGE, chrF)
get percentile bootstrap intervals, paired for differences; the resampling is seeded.
"""

from __future__ import annotations

import math
import random

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion: honest near 0 and 1, unlike the normal one."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_interval(values: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of a mean."""
    if not values:
        return (0.0, 0.0)
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return (means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1])


def interval(values: list[float], binary: bool) -> tuple[float, float]:
    return wilson_interval(sum(values), len(values)) if binary else bootstrap_interval(values)


def mcnemar_exact(improved: int, regressed: int) -> float:
    """Two-sided exact McNemar p-value: under no difference, each discordant pair is a fair coin."""
    n = improved + regressed
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(improved, regressed) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_difference(before: list[float], after: list[float], binary: bool) -> dict:
    """after - before on the same items, its 95% interval, and for 0/1 figures McNemar's p."""
    diffs = [a - b for a, b in zip(after, before, strict=True)]
    mean = sum(diffs) / len(diffs) if diffs else 0.0
    low, high = bootstrap_interval(diffs)
    out = {"difference": round(mean, 4), "difference_ci_low": round(low, 4), "difference_ci_high": round(high, 4)}
    if binary:
        improved = sum(1 for d in diffs if d > 0)
        regressed = sum(1 for d in diffs if d < 0)
        out |= {"improved": improved, "regressed": regressed, "mcnemar_p": float(f"{mcnemar_exact(improved, regressed):.4g}")}
    return out
