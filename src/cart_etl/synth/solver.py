"""Small hill-climbing solvers that place synthetic values to hit published summaries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True, slots=True)
class Slot:
    """One value to place: fixed when ``lo == hi``, else anywhere on the grid in [lo, hi]."""

    lo: float
    hi: float

    @property
    def fixed(self) -> bool:
        return self.lo == self.hi


def fixed(value: float) -> Slot:
    """A slot holding exactly ``value`` (a printed min, max or median)."""
    return Slot(value, value)


def group_slots(
    n: int, median: float, lo: float, hi: float, *, pair_offset: float = 0.0
) -> list[Slot]:
    """Slots whose sorted values have the printed median (min-max) for a group of ``n``.

    Odd ``n``: the middle slot is the median. Even ``n``: the two middle slots are
    ``median ± pair_offset`` so that their mean is the median.
    """
    if n == 1:
        return [fixed(median)]
    if n % 2:
        half = (n - 3) // 2
        return [
            fixed(lo),
            *[Slot(lo, median)] * half,
            fixed(median),
            *[Slot(median, hi)] * half,
            fixed(hi),
        ]
    half = (n - 4) // 2
    m_lo, m_hi = median - pair_offset, median + pair_offset
    return [
        fixed(lo),
        *[Slot(lo, m_lo)] * half,
        fixed(m_lo),
        fixed(m_hi),
        *[Slot(m_hi, hi)] * half,
        fixed(hi),
    ]


def mann_whitney_p(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value, scipy defaults (the test the paper names)."""
    return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def _snap(value: float, step: float) -> float:
    return round(round(value / step) * step, 10)


def _draw(rng: np.random.Generator, slot: Slot, step: float) -> float:
    if slot.fixed:
        return slot.lo
    lo_k, hi_k = int(np.ceil(slot.lo / step - 1e-9)), int(np.floor(slot.hi / step + 1e-9))
    return _snap(int(rng.integers(lo_k, hi_k + 1)) * step, step)


Objective = Callable[[list[np.ndarray]], float]


def hill_climb(
    rng: np.random.Generator,
    groups: Sequence[Sequence[Slot]],
    objective: Objective,
    *,
    step: float,
    tol: float,
    max_iter: int = 60_000,
) -> list[np.ndarray]:
    """Move one free slot at a time, keeping moves that do not worsen ``objective``.

    Returns the values of each group (slot order) once ``objective <= tol``.

    Raises:
        RuntimeError: the target was not reached (the caller's spec is infeasible).
    """
    values = [np.array([_draw(rng, s, step) for s in g], dtype=float) for g in groups]
    free = [(gi, si) for gi, g in enumerate(groups) for si, s in enumerate(g) if not s.fixed]
    best = objective(values)
    for _ in range(max_iter):
        if best <= tol:
            return values
        gi, si = free[int(rng.integers(len(free)))]
        old = values[gi][si]
        values[gi][si] = _draw(rng, groups[gi][si], step)
        score = objective(values)
        if score <= best:
            best = score
        else:
            values[gi][si] = old
    raise RuntimeError(f"calibration did not converge (objective {best:.4f} > {tol})")


def median_gap(values: Sequence[np.ndarray], target: float) -> float:
    """How many values sit on the wrong side of the printed pooled median (0 = exact).

    Counting, rather than measuring the distance, gives the climber a slope to follow:
    with an odd total ``n`` the median equals ``target`` exactly when at most
    ``(n - 1) / 2`` values lie strictly below it and at most as many strictly above.
    """
    pooled = np.concatenate(values)
    half = (len(pooled) - 1) // 2
    below = int((pooled < target - 1e-9).sum())
    above = int((pooled > target + 1e-9).sum())
    gap = max(0, below - half) + max(0, above - half)
    if len(pooled) % 2 == 0:
        gap += int(abs(float(np.median(pooled)) - target) > 1e-9)
    return float(gap)


def two_group_objective(target_p: float | None, total_median: float | None) -> Objective:
    """|p - target| (Mann-Whitney) plus a heavy penalty on the pooled median."""

    def objective(values: list[np.ndarray]) -> float:
        score = 0.0
        if total_median is not None:
            score += 10.0 * median_gap(values, total_median)
        if target_p is not None:
            score += abs(mann_whitney_p(values[0], values[1]) - target_p)
        return score

    return objective


def logrank_p(durations: np.ndarray, events: np.ndarray, in_group: np.ndarray) -> float:
    """Two-group log-rank (Mantel-Cox) p-value, vectorised for use inside the climber.

    Same statistic as ``lifelines.statistics.logrank_test`` (tested against it), ~300x
    faster, which makes searching survival times by hill climbing practical.
    """
    times = np.unique(durations[events.astype(bool)])
    at_risk = durations[None, :] >= times[:, None]
    died = (durations[None, :] == times[:, None]) & events.astype(bool)[None, :]
    n = at_risk.sum(axis=1).astype(float)
    n1 = (at_risk & in_group[None, :]).sum(axis=1).astype(float)
    d = died.sum(axis=1).astype(float)
    d1 = (died & in_group[None, :]).sum(axis=1).astype(float)
    expected = d * n1 / n
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(n > 1, d * (n1 / n) * (1 - n1 / n) * (n - d) / (n - 1), 0.0)
    z2 = (d1.sum() - expected.sum()) ** 2 / var.sum()
    return float(stats.chi2.sf(z2, 1))
