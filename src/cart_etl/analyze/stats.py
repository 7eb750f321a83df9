"""Statistical tests, each returning one result type, and multiple-testing corrections.

Every function states its rule and the reference implementation it matches; the tests in
``tests/analyze/test_stats.py`` compare them with R (the producing call is in each test's
docstring) or with an independent implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats
from statsmodels.stats.inter_rater import cohens_kappa
from statsmodels.stats.multitest import multipletests

from cart_etl.analyze.exact import fisher_freeman_halton

# Test ids as used in mappings/analysis/table2.yaml, with the names printed in reports.
TEST_NAMES: dict[str, str] = {
    "mann_whitney": "Mann-Whitney U (two-sided)",
    "pearson_chi2": "Pearson χ² (no continuity correction)",
    "yates_chi2": "χ² with Yates continuity correction",
    "fisher_exact": "Fisher exact (two-sided)",
    "fisher_freeman_halton": "Fisher-Freeman-Halton exact",
    "wilcoxon_signed_rank": "Wilcoxon signed-rank (paired, two-sided)",
    "logrank": "log-rank",
}
Sample = npt.ArrayLike  # a 1-d sample: list, ndarray or pandas Series
MIN_EXPECTED = 5.0  # Cochran's rule for the χ² approximation


@dataclass(frozen=True, slots=True)
class TestResult:
    """One hypothesis test: which test, its statistic (if any) and the two-sided p-value."""

    test: str  # an id of TEST_NAMES
    p: float
    statistic: float | None = None
    note: str = ""

    @property
    def name(self) -> str:
        """Human-readable test name."""
        return TEST_NAMES.get(self.test, self.test)


def _table(table: Sequence[Sequence[int]]) -> np.ndarray:
    arr = np.asarray(table, dtype=float)
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise ValueError(f"need an r x c table with r, c >= 2, got shape {arr.shape}")
    return arr


def expected_counts(table: Sequence[Sequence[int]]) -> np.ndarray:
    """Expected counts under independence: row total x column total / n."""
    arr = _table(table)
    return np.outer(arr.sum(axis=1), arr.sum(axis=0)) / arr.sum()


def pearson_chi2(table: Sequence[Sequence[int]]) -> TestResult:
    """Pearson χ² test of independence without continuity correction.

    Matches R ``chisq.test(x, correct=FALSE)`` and SPSS "Pearson Chi-Square".
    """
    stat, p, _, _ = stats.chi2_contingency(_table(table), correction=False)
    return TestResult("pearson_chi2", float(p), float(stat))


def yates_chi2(table: Sequence[Sequence[int]]) -> TestResult:
    """χ² test with Yates' continuity correction (2 x 2 only).

    Matches R ``chisq.test(x)`` (default ``correct=TRUE``) and SPSS "Continuity Correction".
    """
    arr = _table(table)
    if arr.shape != (2, 2):
        raise ValueError("Yates' correction applies to 2 x 2 tables only.")
    stat, p, _, _ = stats.chi2_contingency(arr, correction=True)
    return TestResult("yates_chi2", float(p), float(stat))


def fisher_exact(table: Sequence[Sequence[int]]) -> TestResult:
    """Fisher's exact test; 2 x 2 via scipy, larger tables via Fisher-Freeman-Halton.

    Two-sided p = sum of the probabilities of tables no more likely than the observed one,
    as R ``fisher.test(x)``.
    """
    arr = _table(table)
    if arr.shape == (2, 2):
        res = stats.fisher_exact(arr.astype(int))
        return TestResult("fisher_exact", float(res.pvalue), float(res.statistic))
    return TestResult("fisher_freeman_halton", fisher_freeman_halton(arr.astype(int).tolist()))


def mann_whitney(x: Sample, y: Sample) -> TestResult:
    """Mann-Whitney U, two-sided, scipy's default method (exact for small samples without
    ties, otherwise the normal approximation with tie and continuity correction).

    Matches R ``wilcox.test(x, y)`` (exact=NULL, correct=TRUE) and SPSS' asymptotic p.
    """
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    xs, ys = xs[~np.isnan(xs)], ys[~np.isnan(ys)]
    res = stats.mannwhitneyu(xs, ys, alternative="two-sided")
    return TestResult("mann_whitney", float(res.pvalue), float(res.statistic))


def wilcoxon_paired(before: Sample, after: Sample) -> TestResult:
    """Wilcoxon signed-rank test on paired samples (after - before), two-sided.

    scipy's default (exact for n <= 50 without ties or zeros); R ``wilcox.test(after,
    before, paired=TRUE)``.
    """
    b = np.asarray(before, dtype=float)
    a = np.asarray(after, dtype=float)
    res = stats.wilcoxon(a, b, alternative="two-sided")
    return TestResult("wilcoxon_signed_rank", float(res.pvalue), float(res.statistic))


def run_test(
    test: str,
    table: Sequence[Sequence[int]] | None = None,
    x: Sample | None = None,
    y: Sample | None = None,
) -> TestResult:
    """Dispatch a test by its id (the ids of ``mappings/analysis/table2.yaml``)."""
    if test == "mann_whitney":
        if x is None or y is None:
            raise ValueError("mann_whitney needs two samples.")
        return mann_whitney(x, y)
    if table is None:
        raise ValueError(f"{test} needs a contingency table.")
    if test == "pearson_chi2":
        return pearson_chi2(table)
    if test == "yates_chi2":
        return yates_chi2(table)
    if test == "fisher_exact":
        return fisher_exact(table)
    if test == "fisher_freeman_halton":
        return TestResult(test, fisher_freeman_halton(table))
    raise ValueError(f"Unknown test id {test!r}; expected one of {sorted(TEST_NAMES)}.")


def principled_categorical(table: Sequence[Sequence[int]]) -> TestResult:
    """Pre-specified rule: Pearson χ² when every expected count is >= 5 (Cochran 1954),
    otherwise Fisher exact (2 x 2) or Fisher-Freeman-Halton exact (r x c)."""
    expected = expected_counts(table)
    if float(expected.min()) >= MIN_EXPECTED:
        return pearson_chi2(table)
    res = fisher_exact(table)
    return TestResult(
        res.test, res.p, res.statistic, note=f"min expected count {expected.min():.2f} < 5"
    )


def bonferroni(p_values: Sequence[float]) -> list[float]:
    """Bonferroni adjustment: min(1, m x p) over the m tests (R ``p.adjust(p, "bonferroni")``;
    statsmodels ``multipletests(method="bonferroni")``)."""
    return [float(p) for p in multipletests(p_values, method="bonferroni")[1]]


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjustment (R ``p.adjust(p, "holm")``; statsmodels ``multipletests(
    method="holm")``): sort ascending, multiply the k-th smallest by (m - k + 1), enforce
    monotonicity with a running maximum, cap at 1."""
    return [float(p) for p in multipletests(p_values, method="holm")[1]]


def paper_adjusted(p_values: Sequence[float]) -> list[float]:
    """The paper's printed "P#": m x p without the cap at 1 (not a valid probability)."""
    m = len(p_values)
    return [m * p for p in p_values]


def weighted_kappa(confusion: Sequence[Sequence[int]], weights: str = "linear") -> float:
    """Cohen's weighted κ for ordered categories (Cohen 1968), statsmodels ``cohens_kappa``.

    κ_w = 1 - Σ w_ij o_ij / Σ w_ij e_ij with disagreement weights w_ij = |i - j| / (k - 1)
    (``wt="linear"``) or ((i - j) / (k - 1))² (``wt="quadratic"``) over the category
    positions 0..k-1; o = observed, e = expected from the margins. Equals
    ``sklearn.metrics.cohen_kappa_score(weights=...)`` and R ``irr::kappa2(weight="equal"|
    "squared")``. When every rating falls in one and the same category the expected
    disagreement is 0 and κ is 1 (statsmodels would divide by zero).
    """
    obs = np.asarray(confusion, dtype=float)
    k = obs.shape[0]
    if obs.shape != (k, k) or k < 2:
        raise ValueError("weighted κ needs a square confusion table of at least 2 x 2.")
    if weights not in ("linear", "quadratic"):
        raise ValueError("weights must be 'linear' or 'quadratic'.")
    nonzero = np.flatnonzero(obs)
    if len(nonzero) == 1 and obs.flat[nonzero[0]] == np.trace(obs):
        return 1.0
    return float(cohens_kappa(obs, wt=weights, return_results=False))
