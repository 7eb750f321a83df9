"""End to end on the fixture store (reference cohort): the analysis functions reproduce the
paper where the paper is self-consistent, and say why where it is not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from statsmodels.stats.inter_rater import cohens_kappa

from cart_etl.analyze import outcomes
from cart_etl.analyze.agreement import agreement
from cart_etl.analyze.cohort import table2_spec_path
from cart_etl.analyze.published import (
    INCONSISTENCY_OF,
    leaves,
    load_published,
    published_vs_reproduced,
)
from cart_etl.analyze.regression import logistic_models
from cart_etl.analyze.survival import survival
from cart_etl.analyze.table2 import table2

P_TOL = 0.01


@pytest.fixture(scope="module")
def published() -> dict:
    return load_published()


@pytest.fixture(scope="module")
def comparisons(con):
    return published_vs_reproduced(con)


def test_table2_is_a_dataframe_with_both_test_families(con):
    frame = table2(con)
    assert isinstance(frame, pd.DataFrame)
    assert frame.attrs["n"] == {"total": 45, "toci": 17, "non_toci": 28}
    tested = frame[frame["published_test"] != ""]
    assert len(tested) == 10
    assert (tested["principled_test"] != "").all()
    assert (tested["p_bonferroni"] <= 1).all()
    assert (tested["p_holm"] <= tested["p_bonferroni"] + 1e-12).all()
    # the paper's convention is m x p, and is flagged where it exceeds 1
    assert np.allclose(tested["p_paper_convention"], 10 * tested["p_published_test"])
    assert (tested["paper_convention_invalid"] == (tested["p_paper_convention"] > 1)).all()


def test_table2_tests_follow_the_mapping(con):
    spec = yaml.safe_load(table2_spec_path().read_text(encoding="utf-8"))
    names = {
        "mann_whitney": "Mann-Whitney",
        "pearson_chi2": "Pearson",
        "yates_chi2": "Yates",
        "fisher_exact": "Fisher exact",
        "fisher_freeman_halton": "Freeman-Halton",
    }
    frame = table2(con).set_index("row_id")
    for row in spec["rows"]:
        if row["published_test"] == "none":
            continue
        line = frame.loc[[row["id"]]].iloc[0]
        assert names[row["published_test"]] in line["published_test"], row["id"]


def test_principled_rule_switches_where_expected_counts_are_small(con):
    frame = table2(con).set_index("row_id")
    # ICANS: 2 events in 45 -> expected counts < 5 -> Fisher, not Yates
    assert "Fisher" in frame.loc["icans", "principled_test"]
    assert "expected" in frame.loc["icans", "note"]
    crs = frame.loc[["crs_grade"]].iloc[0]
    assert "Freeman-Halton" in crs["principled_test"]


def test_every_table2_figure_reproduced_or_explained(comparisons):
    for c in comparisons:
        if not c.path.startswith("table2."):
            continue
        if c.inconsistency:
            continue
        assert c.status in ("exact", "within tolerance"), c


def test_every_p_value_within_tolerance_with_the_published_test(comparisons, published):
    def is_p(path: str) -> bool:
        last = path.rsplit(".", 1)[-1]
        return last != "p_adj_printed" and (
            last == "p" or last.endswith("_p") or last.startswith("p_")
        )

    p_rows = [c for c in comparisons if is_p(c.path)]
    assert len(p_rows) >= 14
    for c in p_rows:
        if c.inconsistency == "mrd_cr_p":
            continue
        assert abs(float(c.reproduced) - float(c.published)) <= P_TOL, c


def test_every_published_leaf_is_compared(comparisons, published):
    assert [c.path for c in comparisons] == [p for p, _ in leaves(published)]
    for c in comparisons:
        if c.status == "not reproducible":
            assert c.note, c.path  # a reason is always given


def test_only_known_inconsistencies_and_the_s4_finding_differ(comparisons):
    differ = [c for c in comparisons if c.status == "differs"]
    unexplained = [c.path for c in differ if not c.inconsistency]
    assert unexplained == ["logistic_regression.finding"]
    for path, ident in INCONSISTENCY_OF.items():
        assert next(c for c in comparisons if c.path == path).inconsistency == ident


def test_mrd_cr_p_is_the_known_inconsistency(con, published):
    res = outcomes.mrd_negative_cr(con)
    printed = published["response_day28"]["p_mrd_neg_cr_toci_vs_non"]
    assert (res.toci.n, res.toci.denominator, res.non_toci.n, res.non_toci.denominator) == (
        published["response_day28"]["toci_mrd_neg_cr"][0],
        17,
        published["response_day28"]["non_toci_mrd_neg_cr"][0],
        28,
    )
    assert abs(res.test.p - printed) > P_TOL  # Fisher does not give the printed 0.616


def test_il6_fall_from_timeseries_matches_the_detail_mart(con):
    """Two routes to the same fact: lab_timeseries with the README rule vs patient_detail."""
    change = outcomes.cytokine_changes(con)["il6"]
    fell = con.execute(
        "SELECT count(*) FILTER (WHERE il6_fell_after_toci), count(il6_fell_after_toci) "
        "FROM marts.patient_detail JOIN marts.patient USING (person_id) "
        "WHERE is_included AND is_toci"
    ).fetchone()
    assert (change.fell, change.monitored) == fell


def test_grade3_crs_shorter_with_tocilizumab(con):
    dur = outcomes.crs_duration(con)
    t, n, test = dur.by_grade["3"]
    assert test is not None and test.p < 0.05 and t.median < n.median
    assert dur.by_grade["1-2"][2].p > 0.05


def test_survival_logrank_and_medians(con, published):
    res = survival(con)
    for key in ("os", "pfs"):
        assert res[key].logrank.p == pytest.approx(
            published["survival"][f"{key}_logrank_p"], abs=P_TOL
        )
        for gs in res[key].groups.values():
            lo, hi = gs.median_ci
            assert lo <= gs.median_days <= hi
            assert gs.at_risk[0] == gs.n
            risk = list(gs.at_risk.values())
            assert risk == sorted(risk, reverse=True)


def test_grade_agreement_against_statsmodels(con):
    a = agreement(con)
    table = a.confusion.to_numpy()
    assert table.sum() == a.n
    assert np.trace(table) == a.exact_agreement
    assert a.n > a.exact_agreement  # the cohort has recorded grades that disagree
    # drop all-zero grades (grade 4 unused) before handing the table to statsmodels
    used = (table.sum(axis=0) + table.sum(axis=1)) > 0
    sub = table[np.ix_(used, used)]
    # statsmodels' linear weights are |i - j| over the used categories' positions
    idx = np.flatnonzero(used)
    w = np.abs(idx[:, None] - idx[None, :]).astype(float)
    assert a.kappa_linear == pytest.approx(cohens_kappa(sub, weights=w).kappa, rel=1e-9)
    assert a.kappa_quadratic == pytest.approx(cohens_kappa(sub, weights=w**2).kappa, rel=1e-9)


def test_logistic_models_report_problems_honestly(con):
    models = logistic_models(con)
    base = models["baseline"]
    assert base.estimable and base.table is not None
    assert base.events == 17 and base.n == 45
    assert any("per variable" in p for p in base.problems)
    assert (
        (base.table["ci_low"] <= base.table["or"]) & (base.table["or"] <= base.table["ci_high"])
    ).all()
    sep = models["with_crs_grade"]
    assert not sep.estimable and sep.table is None
    assert any("separation" in p for p in sep.problems)
