"""Intervals and the paired test against values worked out by hand or published."""

import pytest

from sft.stats import bootstrap_interval, mcnemar_exact, paired_difference, wilson_interval


def test_wilson_interval_matches_the_textbook_value():
    # Newcombe (1998), Statistics in Medicine 17:857, table I, method 3 (Wilson score interval).
    for (k, n), expected in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605),
                             (0, 20): (0.0, 0.1611)}.items():
        low, high = wilson_interval(k, n)
        assert (round(low, 4), round(high, 4)) == expected


def test_mcnemar_exact_p_values():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    # 10 improved, 0 regressed: 2 * 0.5**10
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 1024)
    # 7 against 2: 2 * (1 + 9 + 36) / 512
    assert mcnemar_exact(7, 2) == pytest.approx(92 / 512)


def test_bootstrap_interval_is_seeded_and_holds_the_mean():
    values = [0.1, 0.9, 0.4, 0.6, 0.5, 0.3, 0.7] * 5
    first = bootstrap_interval(values)
    assert first == bootstrap_interval(values)
    assert first[0] < sum(values) / len(values) < first[1]


def test_paired_difference_counts_the_flips():
    before = [0.0, 0.0, 1.0, 1.0, 0.0]
    after = [1.0, 1.0, 1.0, 0.0, 0.0]
    d = paired_difference(before, after, binary=True)
    assert (d["improved"], d["regressed"], d["difference"]) == (2, 1, 0.2)
    assert d["difference_ci_low"] <= 0.2 <= d["difference_ci_high"] and d["mcnemar_p"] == 1.0
    assert "mcnemar_p" not in paired_difference([0.2, 0.3], [0.4, 0.5], binary=False)
