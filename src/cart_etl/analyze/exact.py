"""Fisher-Freeman-Halton exact test for r x c contingency tables.

Rule (Freeman & Halton, Biometrika 1951;38:141-149): condition on both margins; the
probability of a table under independence is the multivariate hypergeometric
``prod(row!) prod(col!) / (n! prod(cell!))``; the two-sided p-value is the sum of the
probabilities of every table with the same margins that is no more probable than the
observed one. Ties are taken with R's relative tolerance ``1 + 1e-7`` (``fisher.test``).

Why not ``scipy.stats.fisher_exact`` (pinned SciPy 1.17.1): since 1.15 it accepts r x c
tables, but it does not enumerate them. Without ``method`` it draws a Monte Carlo sample
(``MonteCarloMethod``, 9 999 random tables); ``PermutationMethod`` permutes the n
observations and is exact only when n! permutations fit in ``n_resamples`` (n <= 7 with
the default), otherwise it samples too. Neither matches R to the 1e-8 of the tests, and both
change with the random state. On the R oracles below (R ``fisher.test``, scipy 1.17.1
default / MonteCarloMethod seed 1 / PermutationMethod seed 1):

* 2 x 3 marrow blasts, R 0.04153979: scipy 0.0456 / 0.0395 / 0.0447
* 2 x 4 CRS grade, R 0.01302069: scipy 0.0160 / 0.0153 / 0.0119
* 3 x 3, R 0.03550303: scipy 0.0355 / 0.0362 / 0.0350

so this module keeps the exact enumeration; 2 x 2 tables go to scipy (``stats.fisher_exact``),
whose exact two-sided p equals R there.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

# Above this many tables the enumeration is refused (use a Monte Carlo p instead).
MAX_TABLES = 5_000_000
R_RELATIVE_TOLERANCE = 1 + 1e-7


def _log_factorial(k: int) -> float:
    return math.lgamma(k + 1)


def _compositions(total: int, caps: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Every vector of non-negative integers summing to ``total`` with entry i <= caps[i]."""
    if len(caps) == 1:
        if total <= caps[0]:
            yield (total,)
        return
    rest_cap = sum(caps[1:])
    for first in range(max(0, total - rest_cap), min(caps[0], total) + 1):
        for tail in _compositions(total - first, caps[1:]):
            yield (first, *tail)


def _log_cells(rows: Sequence[Sequence[int]]) -> float:
    return sum(_log_factorial(x) for row in rows for x in row)


def fisher_freeman_halton(table: Sequence[Sequence[int]]) -> float:
    """Two-sided exact p-value of independence in an r x c table of counts.

    Enumerates every table with the observed margins (rows filled one at a time, the
    last row fixed by the column margins). Oracles (R 4.x, ``fisher.test``):

    * ``fisher.test(matrix(c(8,23,3,2,6,3),2))`` -> p-value = 0.04154
      (Table 2 marrow blasts < 30 / 30-50 / > 50 % by group)
    * ``fisher.test(matrix(c(0,4,0,7,8,11,9,6),2))`` -> p-value = 0.01302
      (Table 2 CRS grade 0 / 1 / 2 / 3-5 by group)
    * ``fisher.test(matrix(c(3,1,1,3),2))`` -> p-value = 0.4857 (2 x 2: equals Fisher)
    * ``fisher.test(matrix(c(3,1,0,2,4,1,0,2,5),3))`` -> p-value = 0.03550 (3 x 3)

    Raises:
        ValueError: a negative or non-integer count, fewer than 2 rows or columns, or
            more than ``MAX_TABLES`` tables to enumerate.
    """
    rows = [[int(x) for x in row] for row in table]
    if len(rows) < 2 or len(rows[0]) < 2 or any(len(r) != len(rows[0]) for r in rows):
        raise ValueError("Fisher-Freeman-Halton needs a rectangular table of at least 2 x 2.")
    if any(x < 0 for r in rows for x in r) or any(float(x) != int(x) for r in table for x in r):
        raise ValueError("Fisher-Freeman-Halton needs non-negative integer counts.")
    # Enumerate over the shorter dimension: fewer free rows to fill.
    if len(rows) > len(rows[0]):
        rows = [list(col) for col in zip(*rows, strict=True)]
    row_sums = [sum(r) for r in rows]
    col_sums = [sum(c) for c in zip(*rows, strict=True)]
    n = sum(row_sums)
    const = (
        sum(_log_factorial(x) for x in row_sums)
        + sum(_log_factorial(x) for x in col_sums)
        - _log_factorial(n)
    )
    observed = const - _log_cells(rows)
    threshold = observed + math.log(R_RELATIVE_TOLERANCE)
    total = 0.0
    visited = 0

    def walk(i: int, remaining: list[int], log_cells: float) -> None:
        nonlocal total, visited
        if i == len(rows) - 1:
            visited += 1
            if visited > MAX_TABLES:
                raise ValueError(
                    f"Table too large for exact enumeration (> {MAX_TABLES:,} tables)."
                )
            lp = const - (log_cells + sum(_log_factorial(x) for x in remaining))
            if lp <= threshold:
                total += math.exp(lp)
            return
        for row in _compositions(row_sums[i], remaining):
            walk(
                i + 1,
                [c - x for c, x in zip(remaining, row, strict=True)],
                log_cells + sum(_log_factorial(x) for x in row),
            )

    walk(0, col_sums, 0.0)
    return min(1.0, total)
