"""Statistics against external oracles. Every expected value was produced by R 4.2.2
(Debian r-base-core) with the call written beside it; none comes from this package."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from statsmodels.stats.inter_rater import cohens_kappa
from statsmodels.stats.multitest import multipletests

from cart_etl.analyze import stats
from cart_etl.analyze.exact import fisher_freeman_halton


@pytest.mark.parametrize(
    ("table", "r_value"),
    [
        # fisher.test(matrix(c(8,23,3,2,6,3),2))$p.value -> 0.04153978658
        ([[8, 3, 6], [23, 2, 3]], 0.04153978658),
        # fisher.test(matrix(c(0,4,0,7,8,11,9,6),2))$p.value -> 0.01302069269
        ([[0, 0, 8, 9], [4, 7, 11, 6]], 0.01302069269),
        # fisher.test(matrix(c(3,1,0,2,4,1,0,2,5),3))$p.value -> 0.03550303183
        ([[3, 2, 0], [1, 4, 2], [0, 1, 5]], 0.03550303183),
        # fisher.test(matrix(c(2,0,5,3,1,4),3))$p.value -> 1
        ([[2, 3], [0, 1], [5, 4]], 1.0),
        # fisher.test(matrix(c(3,1,1,3),2))$p.value -> 0.4857142857
        ([[3, 1], [1, 3]], 0.4857142857),
    ],
)
def test_fisher_freeman_halton_matches_r(table, r_value):
    """R: fisher.test(matrix(...)) as listed in the parameters."""
    assert fisher_freeman_halton(table) == pytest.approx(r_value, rel=1e-8)
    # transposing the table does not change the exact p
    assert fisher_freeman_halton(np.array(table).T.tolist()) == pytest.approx(r_value, rel=1e-8)


def _brute_force_ffh(table: list[list[int]]) -> float:
    """Independent oracle: enumerate every 2 x c table with the same margins."""
    cols = [a + b for a, b in zip(*table, strict=True)]
    r0, n = sum(table[0]), sum(cols)

    def prob(row):
        return math.prod(math.comb(c, a) for a, c in zip(row, cols, strict=True)) / math.comb(n, r0)

    p_obs = prob(table[0])
    return sum(
        prob(row)
        for row in itertools.product(*(range(c + 1) for c in cols))
        if sum(row) == r0 and prob(row) <= p_obs * (1 + 1e-7)
    )


@pytest.mark.parametrize("seed", range(8))
def test_fisher_freeman_halton_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    table = rng.integers(0, 7, size=(2, 4)).tolist()
    table[0][0] += 1
    table[1][1] += 1
    assert fisher_freeman_halton(table) == pytest.approx(_brute_force_ffh(table), rel=1e-9)


def test_fisher_freeman_halton_rejects_bad_tables():
    with pytest.raises(ValueError, match="rectangular"):
        fisher_freeman_halton([[1, 2, 3]])
    with pytest.raises(ValueError, match="non-negative"):
        fisher_freeman_halton([[1, -2], [3, 4]])


def test_pearson_chi2_matches_r():
    """R: chisq.test(matrix(c(0,4,0,7,8,11,9,6),2), correct=FALSE)$p.value -> 0.01872659442
    chisq.test(matrix(c(8,16,9,12),2), correct=FALSE)$p.value -> 0.5109246761"""
    assert stats.pearson_chi2([[0, 0, 8, 9], [4, 7, 11, 6]]).p == pytest.approx(
        0.01872659442, rel=1e-8
    )
    assert stats.pearson_chi2([[8, 9], [16, 12]]).p == pytest.approx(0.5109246761, rel=1e-8)


def test_yates_chi2_matches_r():
    """R: chisq.test(matrix(c(2,0,15,28),2))$p.value -> 0.2666957512"""
    assert stats.yates_chi2([[2, 15], [0, 28]]).p == pytest.approx(0.2666957512, rel=1e-8)
    with pytest.raises(ValueError, match="2 x 2"):
        stats.yates_chi2([[1, 2, 3], [4, 5, 6]])


def test_fisher_2x2_matches_r():
    """R: fisher.test(matrix(c(16,24,1,4),2))$p.value -> 0.6353323364
    fisher.test(matrix(c(9,10,8,18),2))$p.value -> 0.3532282472"""
    assert stats.fisher_exact([[16, 1], [24, 4]]).p == pytest.approx(0.6353323364, rel=1e-8)
    assert stats.fisher_exact([[9, 8], [10, 18]]).p == pytest.approx(0.3532282472, rel=1e-8)


def test_mann_whitney_matches_r():
    """R: wilcox.test(c(1.1,2.2,3.5,4.0,5.9), c(0.5,0.9,1.8,2.0,2.5,3.1))$p.value
    -> 0.1255411255 (exact); wilcox.test(c(1,2,2,3,3,3), c(2,3,4,4,5,5,6))$p.value
    -> 0.02841095597 (ties: normal approximation with continuity correction)"""
    assert stats.mann_whitney([1.1, 2.2, 3.5, 4.0, 5.9], [0.5, 0.9, 1.8, 2.0, 2.5, 3.1]).p == (
        pytest.approx(0.1255411255, rel=1e-8)
    )
    assert stats.mann_whitney([1, 2, 2, 3, 3, 3], [2, 3, 4, 4, 5, 5, 6]).p == pytest.approx(
        0.02841095597, rel=1e-8
    )


def test_wilcoxon_paired_matches_r():
    """R: wilcox.test(c(120,80,300,55,900,40,20,77), c(200,61,500,70,1000,91,33,60),
    paired=TRUE)$p.value -> 0.1484375"""
    before = [200, 61, 500, 70, 1000, 91, 33, 60]
    after = [120, 80, 300, 55, 900, 40, 20, 77]
    assert stats.wilcoxon_paired(before, after).p == pytest.approx(0.1484375, rel=1e-8)


P_TABLE2 = [0.033, 0.511, 1.0, 0.395, 1.0, 0.042, 0.106, 0.019, 0.267, 0.004]


def test_bonferroni_and_holm_match_r():
    """R: p <- c(0.033,0.511,1,0.395,1,0.042,0.106,0.019,0.267,0.004)
    p.adjust(p, "bonferroni") -> 0.33 1 1 1 1 0.42 1 0.19 1 0.04
    p.adjust(p, "holm")       -> 0.264 1 1 1 1 0.294 0.636 0.171 1 0.04"""
    assert stats.bonferroni(P_TABLE2) == pytest.approx([0.33, 1, 1, 1, 1, 0.42, 1, 0.19, 1, 0.04])
    assert stats.holm(P_TABLE2) == pytest.approx([0.264, 1, 1, 1, 1, 0.294, 0.636, 0.171, 1, 0.04])
    assert stats.holm(P_TABLE2) == pytest.approx(multipletests(P_TABLE2, method="holm")[1])


def test_paper_adjustment_is_uncapped():
    adjusted = stats.paper_adjusted(P_TABLE2)
    assert adjusted[1] == pytest.approx(5.11)
    assert max(adjusted) == pytest.approx(10.0)


def test_principled_rule_switches_on_expected_counts():
    large = [[30, 20], [25, 35]]  # every expected count >= 5
    assert stats.principled_categorical(large).test == "pearson_chi2"
    small_2x2 = [[2, 15], [0, 28]]
    assert stats.principled_categorical(small_2x2).test == "fisher_exact"
    small_2x4 = [[0, 0, 8, 9], [4, 7, 11, 6]]
    res = stats.principled_categorical(small_2x4)
    assert res.test == "fisher_freeman_halton"
    assert res.p == pytest.approx(0.01302069269, rel=1e-8)


@pytest.mark.parametrize("weights", ["linear", "quadratic"])
def test_weighted_kappa_matches_statsmodels(weights):
    table = [[5, 1, 0, 0], [1, 9, 2, 0], [0, 1, 12, 1], [0, 0, 1, 3]]
    oracle = cohens_kappa(np.array(table), wt=weights).kappa
    assert stats.weighted_kappa(table, weights) == pytest.approx(oracle, rel=1e-9)


def test_weighted_kappa_perfect_agreement_is_one():
    assert stats.weighted_kappa([[3, 0], [0, 4]]) == pytest.approx(1.0)
