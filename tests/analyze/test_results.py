"""``Results`` computes each analysis once; the report path asks it for every result."""

from __future__ import annotations

from collections import Counter

import pytest

from cart_etl.analyze import figures, inconsistencies, outcomes, published, report, results
from cart_etl.analyze.inconsistencies import explain_inconsistencies
from cart_etl.analyze.published import published_vs_reproduced
from cart_etl.analyze.reproduced import reproduced_values
from cart_etl.analyze.results import Results

# (module, function) pairs the report needs; each must run once per report.
COUNTED = [
    (results, "table2_rows"),
    (results, "survival"),
    (results, "logistic_models"),
    (results, "agreement"),
    (results, "consort_counts"),
    (results, "cytokine_series"),
    (results, "analysed_details"),
    (outcomes, "response_counts"),
    (outcomes, "mrd_negative_cr"),
    (outcomes, "serious_infection"),
    (outcomes, "crs_duration"),
    (outcomes, "gcsf"),
    (outcomes, "steroids"),
    (outcomes, "tocilizumab"),
    (outcomes, "cytokine_changes_from"),
    # the yaml of published values, wherever it is read
    (published, "load_published"),
    (report, "load_published"),
    (inconsistencies, "load_published"),
]


def test_results_are_cached(con):
    res = Results(con)
    assert res.table2_rows is res.table2_rows
    assert res.table2.attrs["n"] == {"total": 45, "toci": 17, "non_toci": 28}
    assert res.survival is res.survival


def test_results_and_connection_give_the_same_comparison(con):
    res = Results(con)
    assert published_vs_reproduced(res) == published_vs_reproduced(con)
    assert explain_inconsistencies(res) == explain_inconsistencies(con)
    assert reproduced_values(res).keys() == reproduced_values(con).keys()


def test_report_computes_each_result_once(con, tmp_path, monkeypatch):
    calls: Counter[str] = Counter()

    def counted(module, name):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    for module, name in COUNTED:
        counted(module, name)
    # the figures are not under test here: skip drawing them
    for name in ("figure_consort", "figure_efficacy_safety", "figure_cytokines"):
        monkeypatch.setattr(figures, name, lambda *a, **k: None)
    monkeypatch.setattr(figures, "figure_survival", lambda *a, **k: None)
    monkeypatch.setattr(figures, "save", lambda fig, path: path)
    built = report.build_report(con, tmp_path, store="fixture")
    assert built.summary["exact"] > 0
    for _, name in COUNTED:
        assert calls[name] == 1, (name, calls[name])


@pytest.mark.parametrize("weights", ["linear", "quadratic"])
def test_agreement_kappa_is_statsmodels_on_the_full_grade_table(con, weights):
    """With all five grades (an unused grade 4 included) the statsmodels call equals the κ of
    the used grades with their positions as scores (test_analysis)."""
    from statsmodels.stats.inter_rater import cohens_kappa

    res = Results(con)
    kappa = res.agreement.kappa_linear if weights == "linear" else res.agreement.kappa_quadratic
    full = res.agreement.confusion.to_numpy()
    assert kappa == pytest.approx(cohens_kappa(full, wt=weights).kappa, rel=1e-12)
