"""The truth table reproduces every calibrated figure of Zhou et al. 2025 (published yaml)."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from lifelines.statistics import logrank_test
from scipy import stats

from tests.conftest import PUBLISHED

P_TOL = 0.01


@pytest.fixture(scope="module")
def published() -> dict:
    return yaml.safe_load(PUBLISHED.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def truth(reference_cohort: Path) -> pd.DataFrame:
    df = pd.read_csv(
        reference_cohort / "truth" / "patients.csv", keep_default_na=False, na_values=[""]
    )
    for col in df.columns:
        if set(df[col].dropna().unique()) <= {"true", "false"}:
            df[col] = df[col].map({"true": True, "false": False})
    return df


@pytest.fixture(scope="module")
def supplement(reference_cohort: Path) -> pd.DataFrame:
    return pd.read_csv(reference_cohort / "truth" / "supplement.csv")


@pytest.fixture(scope="module")
def analysed(truth: pd.DataFrame) -> pd.DataFrame:
    return truth[truth["is_included"] == True].copy()  # noqa: E712


def _groups(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return df[df["is_toci"] == True], df[df["is_toci"] == False]  # noqa: E712


def _parse_median_range(text: str) -> tuple[float, float, float]:
    m = re.fullmatch(r"\s*([\d.]+)\s*\(([\d.]+)\s*-\s*([\d.]+)\)\s*", text)
    assert m, text
    return float(m[1]), float(m[2]), float(m[3])


def _median_range(values: pd.Series) -> tuple[float, float, float]:
    v = values.dropna().astype(float)
    return float(v.median()), float(v.min()), float(v.max())


def _fisher_2xk(table: np.ndarray) -> float:
    """Fisher-Freeman-Halton exact p for a 2 x k table by enumerating the first row.

    R: fisher.test(matrix(c(8,23,3,2,6,3),2)) -> p-value = 0.0415
    """
    table = np.asarray(table)
    cols = table.sum(axis=0)
    r0 = int(table[0].sum())
    n = int(table.sum())

    def prob(row0: tuple[int, ...]) -> float:
        lp = sum(
            math.lgamma(c + 1) - math.lgamma(a + 1) - math.lgamma(c - a + 1)
            for a, c in zip(row0, cols, strict=False)
        )
        return math.exp(lp - (math.lgamma(n + 1) - math.lgamma(r0 + 1) - math.lgamma(n - r0 + 1)))

    observed = prob(tuple(int(x) for x in table[0]))
    total = 0.0
    for row0 in itertools.product(*(range(int(c) + 1) for c in cols)):
        if sum(row0) == r0:
            p = prob(row0)
            if p <= observed * (1 + 1e-7):
                total += p
    return total


def test_01_fisher_2xk_matches_R():
    """R: fisher.test(matrix(c(8,23,3,2,6,3),2))$p.value -> 0.04149"""
    assert _fisher_2xk(np.array([[8, 3, 6], [23, 2, 3]])) == pytest.approx(0.0415, abs=5e-4)


def test_02_consort_flow(truth, published):
    study = published["study"]
    assert len(truth) == study["n_screened"]
    assert int(truth["is_infused"].sum()) == study["n_infused"]
    reasons = truth["exclusion_reason"].value_counts()
    assert reasons["not_infused"] == study["n_progressed_before_infusion"]
    assert reasons["followup_lt_28d"] == study["n_excluded_followup_lt_28d"]
    assert reasons["data_lost"] == study["n_excluded_data_lost"]
    assert int(truth["is_included"].sum()) == study["n_included"]
    toci, non = _groups(truth[truth["is_included"] == True])  # noqa: E712
    assert (len(toci), len(non)) == (study["n_toci"], study["n_non_toci"])


@pytest.mark.parametrize(
    ("row", "column", "value"),
    [
        ("male", "sex", "M"),
        ("high_risk", "is_high_risk", True),
        ("prior_allo_sct", "prior_allo_sct", True),
        ("icans", "has_icans", True),
    ],
)
def test_03_table2_binary_counts(analysed, published, row, column, value):
    toci, non = _groups(analysed)
    spec = published["table2"][row]
    for df, key in ((analysed, "total"), (toci, "toci"), (non, "non_toci")):
        n = int((df[column] == value).sum())
        assert [n, round(100 * n / len(df), 1)] == pytest.approx(spec[key], abs=0.051), (row, key)


@pytest.mark.parametrize(
    ("row", "column", "test"),
    [
        ("male", "sex", "chi2"),
        ("high_risk", "is_high_risk", "fisher"),
        ("prior_allo_sct", "prior_allo_sct", "fisher"),
        ("icans", "has_icans", "yates"),
    ],
)
def test_04_table2_binary_p_as_published(analysed, published, row, column, test):
    toci, non = _groups(analysed)
    value = {"sex": "M"}.get(column, True)
    table = np.array(
        [
            [(toci[column] == value).sum(), (toci[column] != value).sum()],
            [(non[column] == value).sum(), (non[column] != value).sum()],
        ]
    )
    if test == "fisher":
        p = stats.fisher_exact(table).pvalue
    else:
        p = stats.chi2_contingency(table, correction=(test == "yates"))[1]
    assert p == pytest.approx(published["table2"][row]["p"], abs=P_TOL)


@pytest.mark.parametrize(
    ("row", "column", "is_integer"),
    [
        ("age_years", "age_years", True),
        ("cart_dose_1e6_per_kg", "cart_dose_1e6_per_kg", False),
        ("steroid_mp_equiv_mg", "steroid_mp_equiv_mg", False),
        ("marrow_blasts_pct", "marrow_blasts_pct", False),
        ("lines_of_therapy", "lines_of_therapy", True),
    ],
)
def test_05_table2_medians_and_ranges(analysed, published, row, column, is_integer):
    toci, non = _groups(analysed)
    spec = published["table2"][row]
    for df, key in ((analysed, "total"), (toci, "toci"), (non, "non_toci")):
        med, lo, hi = _parse_median_range(spec[key])
        got = _median_range(df[column])
        if (row, key) == ("lines_of_therapy", "non_toci"):
            # known inconsistency lines_non_integer: 1.5-3.5 cannot hold integer counts;
            # reproduced as 2.5 (1-3).
            assert got == (2.5, 1.0, 3.0)
            continue
        if (row, key) == ("steroid_mp_equiv_mg", "total"):
            # known inconsistency steroid_total_range: 800 exceeds both group maxima.
            assert got[:2] == (med, lo)
            assert got[2] == 201.0
            continue
        assert got == pytest.approx((med, lo, hi), abs=0.0051), (row, key)


@pytest.mark.parametrize(
    "row", ["age_years", "lines_of_therapy", "cart_dose_1e6_per_kg", "steroid_mp_equiv_mg"]
)
def test_06_table2_continuous_p_mann_whitney(analysed, published, row):
    toci, non = _groups(analysed)
    p = stats.mannwhitneyu(toci[row], non[row], alternative="two-sided").pvalue
    assert p == pytest.approx(published["table2"][row]["p"], abs=P_TOL)


def test_07_marrow_blast_categories(analysed, published):
    toci, non = _groups(analysed)
    spec = published["table2"]["marrow_blasts_pct_category"]
    bins = {"lt30": (-1, 30), "30to50": (30, 50), "gt50": (50, 101)}
    table = []
    for name, (lo, hi) in bins.items():
        counts = []
        for df, key in ((analysed, "total"), (toci, "toci"), (non, "non_toci")):
            v = df["marrow_blasts_pct"]
            n = (
                int(((v >= lo) & (v < hi)).sum())
                if name == "lt30"
                else int(((v >= lo) & (v <= hi)).sum() if name == "30to50" else (v > lo).sum())
            )
            assert [n, round(100 * n / len(df), 1)] == pytest.approx(spec[name][key], abs=0.051), (
                name,
                key,
            )
            counts.append(n)
        table.append(counts[1:])
    assert _fisher_2xk(np.array(table).T) == pytest.approx(spec["p"], abs=P_TOL)


def test_08_crs_grade_table_and_p(analysed, published):
    toci, non = _groups(analysed)
    spec = published["table2"]["crs_grade"]
    grades = {"g0": [0], "g1": [1], "g2": [2], "g3to5": [3, 4, 5]}
    table = []
    for name, values in grades.items():
        row = []
        for df, key in ((analysed, "total"), (toci, "toci"), (non, "non_toci")):
            n = int(df["max_crs_grade"].isin(values).sum())
            assert [n, round(100 * n / len(df), 1)] == pytest.approx(spec[name][key], abs=0.051)
            row.append(n)
        table.append(row[1:])
    assert stats.chi2_contingency(np.array(table).T, correction=False)[1] == pytest.approx(
        spec["p"], abs=P_TOL
    )
    crs = published["crs"]
    assert int((analysed["max_crs_grade"] >= 1).sum()) == crs["any_grade"][0]
    for g in (1, 2, 3, 4):
        assert int((analysed["max_crs_grade"] == g).sum()) == crs[f"g{g}"]


def test_09_crs_duration(analysed, published):
    toci, non = _groups(analysed)
    crs = published["crs"]
    assert _median_range(toci["crs_duration_days"]) == pytest.approx(
        _parse_median_range(crs["duration_days_toci"]), abs=0.0051
    )
    assert _median_range(non["crs_duration_days"]) == pytest.approx(
        _parse_median_range(crs["duration_days_non_toci"]), abs=0.0051
    )
    t3, n3 = toci[toci["max_crs_grade"] == 3], non[non["max_crs_grade"] == 3]
    p3 = stats.mannwhitneyu(
        t3["crs_duration_days"], n3["crs_duration_days"], alternative="two-sided"
    ).pvalue
    assert p3 < 0.05
    assert t3["crs_duration_days"].median() < n3["crs_duration_days"].median()
    t12, n12 = toci[toci["max_crs_grade"].isin([1, 2])], non[non["max_crs_grade"].isin([1, 2])]
    assert (
        stats.mannwhitneyu(
            t12["crs_duration_days"], n12["crs_duration_days"], alternative="two-sided"
        ).pvalue
        > 0.05
    )


def test_10_tocilizumab_and_steroids(analysed, published):
    toci, non = _groups(analysed)
    spec = published["tocilizumab"]
    assert len(toci) == spec["patients"]
    assert toci["max_crs_grade"].value_counts().to_dict() == {
        3: spec["by_crs_grade"]["g3"],
        2: spec["by_crs_grade"]["g2"],
    }
    lo, hi = (int(x) for x in spec["doses_per_patient"].split("-"))
    assert (toci["toci_doses"].min(), toci["toci_doses"].max()) == (lo, hi)
    assert _median_range(toci["toci_cumulative_mg"]) == _parse_median_range(spec["cumulative_mg"])
    only = published["corticosteroids"]["non_toci_steroid_only"]
    steroid_non = non[non["steroid_mp_equiv_mg"] > 0]
    assert len(steroid_non) == only["patients"]
    assert steroid_non["max_crs_grade"].value_counts().to_dict() == {
        1: only["g1"],
        2: only["g2"],
        3: only["g3"],
    }
    # known inconsistency steroid_patient_count: Table 2 reading gives 17 + 10 = 27, text says 25.
    assert int((analysed["steroid_mp_equiv_mg"] > 0).sum()) == 27


def test_11_response_day28(analysed, published):
    toci, non = _groups(analysed)
    spec = published["response_day28"]
    counts = analysed["response_day28"].value_counts()
    assert (counts["mrd_neg_cr"], counts["mrd_pos_cr"], counts["pr"]) == (
        spec["mrd_neg_cr"],
        spec["mrd_pos_cr"],
        spec["pr"],
    )
    for df, key in ((toci, "toci_mrd_neg_cr"), (non, "non_toci_mrd_neg_cr")):
        n = int((df["response_day28"] == "mrd_neg_cr").sum())
        assert [n, round(100 * n / len(df), 2)] == pytest.approx(spec[key], abs=0.006)
    # known inconsistency mrd_cr_p: Fisher on 16/17 vs 24/28 gives 0.635, printed 0.616.
    table = [[16, 1], [24, 4]]
    assert stats.fisher_exact(table).pvalue == pytest.approx(0.635, abs=0.001)


def test_12_infection_icans_gcsf(analysed, supplement, published):
    toci, non = _groups(analysed)
    spec = published["safety"]
    for df, key in ((toci, "toci"), (non, "non_toci")):
        n = int(df["serious_infection"].sum())
        assert [n, round(100 * n / len(df), 1)] == pytest.approx(
            spec["serious_infection"][key], abs=0.051
        )
    table = [
        [toci["serious_infection"].sum(), (~toci["serious_infection"].astype(bool)).sum()],
        [non["serious_infection"].sum(), (~non["serious_infection"].astype(bool)).sum()],
    ]
    assert stats.fisher_exact(table).pvalue == pytest.approx(
        spec["serious_infection"]["p"], abs=P_TOL
    )
    assert int(analysed["has_icans"].sum()) == spec["icans"]["patients"]
    assert int((analysed["max_icans_grade"] == 3).sum()) == 1
    gcsf = supplement.set_index("study_id").loc[analysed["study_id"], "gcsf_total_ug"].to_numpy()
    in_toci = analysed["is_toci"].to_numpy(dtype=bool)
    p = stats.mannwhitneyu(gcsf[in_toci], gcsf[~in_toci], alternative="two-sided").pvalue
    assert p == pytest.approx(spec["gcsf_dose_p"], abs=P_TOL)


def test_13_cytokines_after_tocilizumab(analysed, supplement, published):
    spec = published["cytokines_toci_group"]
    sup = supplement.set_index("study_id").loc[analysed.loc[analysed["is_toci"], "study_id"]]
    assert sup["il6_before_first_toci"].notna().sum() == spec["monitored"]
    fell = sup["il6_after_first_toci"] < sup["il6_before_first_toci"]
    assert int(fell.sum()) == spec["decreased_after_toci"][0]
    assert int((~fell).sum()) == spec["il6_still_elevated"][0]


def test_14_survival_logrank(analysed, published):
    toci, non = _groups(analysed)
    for kind in ("os", "pfs"):
        res = logrank_test(
            toci[f"{kind}_days"],
            non[f"{kind}_days"],
            toci[f"{kind}_event"].astype(bool),
            non[f"{kind}_event"].astype(bool),
        )
        assert res.p_value == pytest.approx(published["survival"][f"{kind}_logrank_p"], abs=P_TOL)


def test_15_included_patients_followed_28_days(analysed):
    assert (analysed["os_days"] >= 28).all()
    assert (analysed["pfs_days"] <= analysed["os_days"]).all()
