"""Figure 4: Kaplan-Meier OS and PFS by tocilizumab group, log-rank test (lifelines).

OS = death or last contact - infusion (days), event = death; PFS = first of progression or
death, else last contact; event = progression or death (README conventions, marts.patient).
Median survival with its 95 % CI (lifelines: Brookmeyer-Crowley on the log(-log) survival
band); numbers at risk at fixed days.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import duckdb
import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test
from lifelines.utils import median_survival_times

from cart_etl.analyze.cohort import GROUP_NON_TOCI, GROUP_TOCI, analysed_patients
from cart_etl.analyze.stats import TestResult

ENDPOINTS = {"os": "Overall survival", "pfs": "Progression-free survival"}
GROUP_LABELS = {GROUP_TOCI: "Tocilizumab", GROUP_NON_TOCI: "No tocilizumab"}


@dataclass
class GroupSurvival:
    """One group's Kaplan-Meier fit: median with CI, numbers at risk."""

    group: str
    n: int
    events: int
    median_days: float  # inf when the curve never falls to 0.5
    median_ci: tuple[float, float]
    fitter: KaplanMeierFitter
    at_risk: dict[int, int] = field(default_factory=dict)


@dataclass
class SurvivalResult:
    """One endpoint: per-group fits and the log-rank test."""

    endpoint: str
    groups: dict[str, GroupSurvival]
    logrank: TestResult


def at_risk(durations: pd.Series, times: list[int]) -> dict[int, int]:
    """Patients still under observation (duration >= t) at each time t."""
    return {t: int((durations >= t).sum()) for t in times}


def risk_times(max_days: float, step: int = 180) -> list[int]:
    """0, step, 2 step, ... up to the last follow-up."""
    return list(range(0, int(max_days) + 1, step))


def fit_endpoint(df: pd.DataFrame, endpoint: str) -> SurvivalResult:
    """Kaplan-Meier per group and the two-group log-rank test for ``os`` or ``pfs``."""
    days, event = f"{endpoint}_days", f"{endpoint}_event"
    data = df[[days, event, "group"]].dropna()
    times = risk_times(float(data[days].max()))
    groups: dict[str, GroupSurvival] = {}
    for g in (GROUP_TOCI, GROUP_NON_TOCI):
        sub = data[data["group"] == g]
        kmf = KaplanMeierFitter(label=GROUP_LABELS[g])
        kmf.fit(sub[days].astype(float), sub[event].astype(bool))
        ci = median_survival_times(kmf.confidence_interval_)
        lo, hi = (float(x) for x in ci.iloc[0])
        groups[g] = GroupSurvival(
            group=g,
            n=len(sub),
            events=int(sub[event].astype(bool).sum()),
            median_days=float(kmf.median_survival_time_),
            median_ci=(lo, hi),
            fitter=kmf,
            at_risk=at_risk(sub[days], times),
        )
    t, n = (data[data["group"] == g] for g in (GROUP_TOCI, GROUP_NON_TOCI))
    res = logrank_test(
        t[days].astype(float), n[days].astype(float), t[event].astype(bool), n[event].astype(bool)
    )
    return SurvivalResult(
        endpoint, groups, TestResult("logrank", float(res.p_value), float(res.test_statistic))
    )


def survival(con: duckdb.DuckDBPyConnection) -> dict[str, SurvivalResult]:
    """OS and PFS of the analysed patients by group."""
    df = analysed_patients(con)
    return {e: fit_endpoint(df, e) for e in ENDPOINTS}


def fmt_days(x: float) -> str:
    """A median or CI bound in days; 'not reached' for an infinite value."""
    return "not reached" if math.isinf(x) or math.isnan(x) else f"{x:.0f}"
