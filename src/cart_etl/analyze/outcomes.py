"""Results-section and Figure 2-3 statistics: response, CRS course, treatment, safety,
cytokines after tocilizumab. Each function reads the marts and returns plain values."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from cart_etl.analyze import stats
from cart_etl.analyze.cohort import (
    CYTOKINES,
    GROUP_NON_TOCI,
    GROUP_TOCI,
    analysed_details,
    analysed_patients,
    crs_episodes,
    cytokine_series,
    toci_dose_intervals_h,
    toci_doses,
)
from cart_etl.analyze.stats import TestResult
from cart_etl.analyze.table2 import Continuous, Count, summarise_continuous

RESPONSES = ("mrd_neg_cr", "mrd_pos_cr", "pr", "nr")
# README rule for "IL-6 fell after tocilizumab": last sample before the first dose vs the
# first sample 24-72 h after it.
AFTER_WINDOW_H = (24.0, 72.0)


def _split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return df[df["group"] == GROUP_TOCI], df[df["group"] == GROUP_NON_TOCI]


def _two_by_two(df: pd.DataFrame, hit: pd.Series) -> list[list[int]]:
    """Rows toci / non_toci, columns yes / no."""
    out = []
    for g in (GROUP_TOCI, GROUP_NON_TOCI):
        in_g = df["group"] == g
        out.append([int((hit & in_g).sum()), int((~hit & in_g).sum())])
    return out


@dataclass(frozen=True)
class GroupComparison:
    """A characteristic counted per group, with its 2 x 2 Fisher test."""

    total: Count
    toci: Count
    non_toci: Count
    test: TestResult


def compare_binary(df: pd.DataFrame, hit: pd.Series) -> GroupComparison:
    """n (%) per group and Fisher's exact test (rows toci / non_toci)."""
    hit = hit.fillna(False).astype(bool)
    table = _two_by_two(df, hit)
    toci, non = _split(df)
    return GroupComparison(
        Count(int(hit.sum()), len(df)),
        Count(table[0][0], len(toci)),
        Count(table[1][0], len(non)),
        stats.fisher_exact(table),
    )


def response_counts(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Day-28 response (MRD-negative CR, MRD-positive CR, PR, NR) x group, counts."""
    df = analysed_patients(con)
    table = pd.crosstab(df["response_day28"], df["group"]).reindex(
        index=list(RESPONSES), columns=[GROUP_TOCI, GROUP_NON_TOCI], fill_value=0
    )
    table["total"] = table.sum(axis=1)
    return table


def mrd_negative_cr(con: duckdb.DuckDBPyConnection) -> GroupComparison:
    """MRD-negative CR by group with Fisher's exact test (R 3.4 prints 0.616)."""
    df = analysed_patients(con)
    return compare_binary(df, df["response_day28"] == "mrd_neg_cr")


def serious_infection(con: duckdb.DuckDBPyConnection) -> GroupComparison:
    """Serious infection (CTCAE >= 3) by group with Fisher's exact test (R 3.4: 0.353)."""
    df = analysed_patients(con)
    return compare_binary(df, df["serious_infection"].astype("boolean"))


@dataclass(frozen=True)
class DurationResult:
    """CRS duration (days) per group, and Mann-Whitney tests overall and within grades."""

    toci: Continuous
    non_toci: Continuous
    overall: TestResult
    by_grade: dict[str, tuple[Continuous, Continuous, TestResult | None]]


def crs_duration(con: duckdb.DuckDBPyConnection) -> DurationResult:
    """Duration of CRS (patients with CRS) by group, overall and by maximum grade (F2B).

    Grades compared within {1-2} and {3}; a grade stratum with an empty group has no test.
    """
    df = analysed_patients(con)
    crs = df[df["max_crs_grade"] >= 1]
    toci, non = _split(crs)
    strata = {"1-2": [1, 2], "3": [3], "4": [4]}
    by_grade: dict[str, tuple[Continuous, Continuous, TestResult | None]] = {}
    for name, grades in strata.items():
        t = toci[toci["max_crs_grade"].isin(grades)]["crs_duration_days"]
        n = non[non["max_crs_grade"].isin(grades)]["crs_duration_days"]
        if t.empty and n.empty:
            continue
        test = stats.mann_whitney(t, n) if len(t) and len(n) else None
        by_grade[name] = (summarise_continuous(t), summarise_continuous(n), test)
    return DurationResult(
        summarise_continuous(toci["crs_duration_days"]),
        summarise_continuous(non["crs_duration_days"]),
        stats.mann_whitney(toci["crs_duration_days"], non["crs_duration_days"]),
        by_grade,
    )


def crs_grade_counts(con: duckdb.DuckDBPyConnection) -> dict[int, int]:
    """Analysed patients per maximum CRS grade 0-4."""
    df = analysed_patients(con)
    return {g: int((df["max_crs_grade"] == g).sum()) for g in range(5)}


def gcsf(con: duckdb.DuckDBPyConnection) -> tuple[Continuous, Continuous, TestResult]:
    """Total G-CSF (ug) by group and Mann-Whitney U (R 3.4 prints 0.227)."""
    d = analysed_details(con)
    toci, non = _split(d)
    return (
        summarise_continuous(toci["gcsf_total_ug"]),
        summarise_continuous(non["gcsf_total_ug"]),
        stats.mann_whitney(toci["gcsf_total_ug"], non["gcsf_total_ug"]),
    )


def _count_by_grade(df: pd.DataFrame) -> dict[int, int]:
    """Patients per maximum CRS grade present in ``df``."""
    grades = pd.to_numeric(df["max_crs_grade"]).dropna().astype(int)
    return {int(g): int((grades == g).sum()) for g in sorted(set(grades))}


@dataclass(frozen=True)
class TociSummary:
    """Tocilizumab use in the analysed toci group (R 3.2)."""

    patients: int
    by_grade: dict[int, int]
    doses_min: int
    doses_max: int
    cumulative_mg: Continuous
    max_hours_onset_to_first: float
    min_hours_between_doses: float
    doses_over_label: int


def tocilizumab(con: duckdb.DuckDBPyConnection) -> TociSummary:
    """Patients, grade at treatment, doses, cumulative mg, timing and label-limit doses."""
    df = analysed_patients(con)
    toci = df[df["group"] == GROUP_TOCI]
    eps = crs_episodes(con)
    first = eps.loc[eps["group"] == GROUP_TOCI, "hours_onset_to_first_toci"].dropna()
    gaps = toci_dose_intervals_h(con)["hours_since_previous"].dropna()
    doses = toci_doses(con)
    return TociSummary(
        patients=len(toci),
        by_grade=_count_by_grade(toci),
        doses_min=int(toci["toci_doses"].min()),
        doses_max=int(toci["toci_doses"].max()),
        cumulative_mg=summarise_continuous(toci["toci_cumulative_mg"]),
        max_hours_onset_to_first=float(first.max()) if len(first) else float("nan"),
        min_hours_between_doses=float(gaps.min()) if len(gaps) else float("nan"),
        doses_over_label=int(doses["exceeds_label_limit"].sum()),
    )


@dataclass(frozen=True)
class SteroidSummary:
    """Systemic corticosteroid use (MP-equivalent mg, days 0-28)."""

    patients: int
    toci_patients: int
    non_toci_only: int
    non_toci_only_by_grade: dict[int, int]
    among_treated: Continuous


def steroids(con: duckdb.DuckDBPyConnection) -> SteroidSummary:
    """Patients given steroids, the non-toci steroid-only patients by grade, totals."""
    df = analysed_patients(con)
    given = df[df["steroid_mp_equiv_mg"] > 0]
    only = given[given["group"] == GROUP_NON_TOCI]
    return SteroidSummary(
        patients=len(given),
        toci_patients=int((given["group"] == GROUP_TOCI).sum()),
        non_toci_only=len(only),
        non_toci_only_by_grade=_count_by_grade(only),
        among_treated=summarise_continuous(given["steroid_mp_equiv_mg"]),
    )


def icans(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """ICANS patients overall, in each group, and with grade >= 3."""
    df = analysed_patients(con)
    has = df["has_icans"].fillna(False).astype(bool)
    return {
        "patients": int(has.sum()),
        GROUP_TOCI: int((has & (df["group"] == GROUP_TOCI)).sum()),
        GROUP_NON_TOCI: int((has & (df["group"] == GROUP_NON_TOCI)).sum()),
        "grade3plus": int((df["max_icans_grade"] >= 3).sum()),
    }


def before_after(series: pd.DataFrame, item: str) -> pd.DataFrame:
    """Per patient: last value before the first tocilizumab dose and first value 24-72 h
    after it (README rule); only patients with both. Columns: person_id, before, after."""
    s = series[series["item"] == item]
    before = (
        s[s["hours_from_first_toci"] < 0]
        .sort_values("hours_from_first_toci")
        .groupby("person_id")["value"]
        .last()
    )
    lo, hi = AFTER_WINDOW_H
    window = s[(s["hours_from_first_toci"] >= lo) & (s["hours_from_first_toci"] <= hi)]
    after = window.sort_values("hours_from_first_toci").groupby("person_id")["value"].first()
    out = pd.concat({"before": before, "after": after}, axis=1).dropna().reset_index()
    return out


@dataclass(frozen=True)
class CytokineChange:
    """Patients whose level fell from before to 24-72 h after the first dose."""

    item: str
    monitored: int
    fell: int
    test: TestResult | None
    median_before: float
    median_after: float


def cytokine_changes(con: duckdb.DuckDBPyConnection) -> dict[str, CytokineChange]:
    """Per cytokine: monitored patients, how many fell, paired Wilcoxon signed-rank test."""
    return cytokine_changes_from(cytokine_series(con))


def cytokine_changes_from(series: pd.DataFrame) -> dict[str, CytokineChange]:
    """``cytokine_changes`` of an already read ``cohort.cytokine_series`` frame."""
    out = {}
    for item in CYTOKINES:
        pairs = before_after(series, item)
        fell = int((pairs["after"] < pairs["before"]).sum())
        test = None
        if len(pairs) >= 2 and bool((pairs["after"] != pairs["before"]).any()):
            test = stats.wilcoxon_paired(pairs["before"], pairs["after"])
        out[item] = CytokineChange(
            item,
            len(pairs),
            fell,
            test,
            float(np.median(pairs["before"])) if len(pairs) else float("nan"),
            float(np.median(pairs["after"])) if len(pairs) else float("nan"),
        )
    return out
