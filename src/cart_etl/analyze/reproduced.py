"""The reproduced side of published vs reproduced: every figure of
``reference/paper/published_values.yaml`` that the marts allow, computed from the analysis
results (SQL over ``marts.*``), keyed by its dotted path in the yaml.

A figure the generic comparison of ``published.compare`` cannot judge (a statement such as
"within 12 h", a method, a claim) carries its own status here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from cart_etl.analyze.cohort import CYTOKINE_LABELS, CYTOKINES, GROUP_NON_TOCI, GROUP_TOCI
from cart_etl.analyze.regression import significant_covariates
from cart_etl.analyze.results import Results, results_of
from cart_etl.analyze.table2 import Count, fmt_number

# Table 2 columns of the yaml -> columns of the computed rows.
COLUMNS = {"total": "total", "toci": GROUP_TOCI, "non_toci": GROUP_NON_TOCI}
CONSORT_BOXES = {
    "n_screened": "screened",
    "n_progressed_before_infusion": "excluded:not_infused",
    "n_infused": "infused",
    "n_excluded_followup_lt_28d": "excluded:followup_lt_28d",
    "n_excluded_data_lost": "excluded:data_lost",
    "n_included": "analysed",
    "n_toci": "analysed:toci",
    "n_non_toci": "analysed:no_toci",
}


@dataclass(frozen=True)
class Reproduced:
    """A reproduced value; ``status`` set only when the generic comparison cannot decide."""

    value: Any
    status: str | None = None
    note: str = ""
    display: str | None = None


def _descriptive(note: str) -> Reproduced:
    return Reproduced("-", status="not reproducible", note=note)


def _claim(holds: bool, display: str, note: str = "") -> Reproduced:
    return Reproduced(display, status="exact" if holds else "differs", note=note, display=display)


def _study(res: Results, out: dict[str, Reproduced]) -> None:
    flow = res.consort
    for key, box in CONSORT_BOXES.items():
        out[f"study.{key}"] = Reproduced(flow.get(box, 0))
    months = res.enrolment_months
    out["study.enrolment_window"] = Reproduced(
        list(months) if months else None,
        status="exact" if months else "not reproducible",
        display=f"{months[0]} to {months[1]} (first/last infusion)" if months else "-",
    )
    method = "a statement of method, not a figure; this report names the test on every row"
    out["study.crs_grading"] = _descriptive("method; the marts carry the derived ASTCT 2019 grade")
    out["study.response_assessment_day"] = _descriptive(
        "design; marts.patient keeps the response of the day 21-35 marrow, not its day"
    )
    out["study.statistics_software"] = _descriptive("this report uses scipy/statsmodels/lifelines")
    out["study.continuous_tests"] = _descriptive(method)
    out["study.categorical_tests"] = _descriptive(method)


def _table2(res: Results, out: dict[str, Reproduced]) -> None:
    for row in res.table2_rows:
        base = f"table2.{row.spec.id}"
        for pub_col, col in COLUMNS.items():
            if row.spec.kind == "continuous":
                out[f"{base}.{pub_col}"] = Reproduced(row.continuous[col])
            elif row.spec.kind == "binary":
                out[f"{base}.{pub_col}"] = Reproduced(row.counts[col]["yes"])
            else:
                for cat in row.spec.categories:
                    out[f"{base}.{cat.id}.{pub_col}"] = Reproduced(row.counts[col][cat.id])
        if row.published is not None:
            out[f"{base}.p"] = Reproduced(row.published.p, note=row.published.name)
            out[f"{base}.p_adj_printed"] = Reproduced(
                row.adjusted["published_bonferroni"],
                note=f"Bonferroni capped at 1 (paper convention 10 x p = "
                f"{row.adjusted['published_paper_convention']:.2f})",
            )


def _response_and_crs(res: Results, out: dict[str, Reproduced]) -> None:
    resp = res.response
    for response in ("mrd_neg_cr", "mrd_pos_cr", "pr"):
        out[f"response_day28.{response}"] = Reproduced(int(resp["total"][response]))
    mrd = res.mrd
    out["response_day28.toci_mrd_neg_cr"] = Reproduced(mrd.toci)
    out["response_day28.non_toci_mrd_neg_cr"] = Reproduced(mrd.non_toci)
    out["response_day28.p_mrd_neg_cr_toci_vs_non"] = Reproduced(mrd.test.p, note=mrd.test.name)

    grades = res.crs_grades
    n_analysed = res.consort.get("analysed", 0)
    out["crs.any_grade"] = Reproduced(Count(sum(grades[g] for g in (1, 2, 3, 4)), n_analysed))
    for g in (1, 2, 3, 4):
        out[f"crs.g{g}"] = Reproduced(grades[g])
    dur = res.crs_duration
    out["crs.duration_days_toci"] = Reproduced(dur.toci)
    out["crs.duration_days_non_toci"] = Reproduced(dur.non_toci)
    g3 = dur.by_grade.get("3")
    test3 = g3[2] if g3 is not None else None
    if g3 is not None and test3 is not None:
        t3, n3 = g3[0], g3[1]
        out["crs.duration_g3_toci_shorter"] = _claim(
            test3.p < 0.05 and t3.median < n3.median,
            f"p = {test3.p:.3f}; median {fmt_number(t3.median)} vs {fmt_number(n3.median)} d",
            note="Mann-Whitney U within grade 3",
        )
    g12 = dur.by_grade.get("1-2")
    if g12 is not None and g12[2] is not None:
        out["crs.duration_g1_2"] = _claim(
            g12[2].p >= 0.05, f"p = {g12[2].p:.3f}", note="Mann-Whitney U within grades 1-2"
        )


def _treatment(res: Results, out: dict[str, Reproduced]) -> None:
    toci = res.tocilizumab
    out["tocilizumab.patients"] = Reproduced(toci.patients)
    out["tocilizumab.by_crs_grade.g2"] = Reproduced(toci.by_grade.get(2, 0))
    out["tocilizumab.by_crs_grade.g3"] = Reproduced(toci.by_grade.get(3, 0))
    out["tocilizumab.doses_per_patient"] = Reproduced((toci.doses_min, toci.doses_max))
    out["tocilizumab.cumulative_mg"] = Reproduced(toci.cumulative_mg)
    out["tocilizumab.given_within_h_of_symptom_onset"] = _claim(
        toci.max_hours_onset_to_first <= 12,
        f"first dose at most {toci.max_hours_onset_to_first:.1f} h after CRS onset",
    )
    out["tocilizumab.repeat_if_no_relief_after_h"] = _claim(
        toci.min_hours_between_doses >= 8,
        f"shortest interval between doses {toci.min_hours_between_doses:.1f} h",
    )
    max_mg_kg = float(res.toci_doses["dose_mg_per_kg"].max())
    out["tocilizumab.label_dose"] = _claim(
        toci.doses_over_label == 0 and max_mg_kg <= 8.05,
        f"{toci.doses_over_label} doses > 800 mg; max {max_mg_kg:.2f} mg/kg",
    )

    ster = res.steroids
    out["corticosteroids.patients"] = Reproduced(ster.patients)
    out["corticosteroids.cumulative_mp_equiv_mg"] = Reproduced(ster.among_treated)
    out["corticosteroids.non_toci_steroid_only.patients"] = Reproduced(ster.non_toci_only)
    for g in (1, 2, 3):
        out[f"corticosteroids.non_toci_steroid_only.g{g}"] = Reproduced(
            ster.non_toci_only_by_grade.get(g, 0)
        )


def _cytokines(res: Results, out: dict[str, Reproduced]) -> None:
    il6 = res.cytokine_changes["il6"]
    out["cytokines_toci_group.monitored"] = Reproduced(il6.monitored)
    out["cytokines_toci_group.decreased_after_toci"] = Reproduced(Count(il6.fell, il6.monitored))
    out["cytokines_toci_group.il6_still_elevated"] = Reproduced(
        Count(il6.monitored - il6.fell, il6.monitored)
    )
    per_item = res.cytokine_series.groupby("item")["person_id"].nunique().to_dict()
    n_toci = res.tocilizumab.patients
    panel = ", ".join(f"{CYTOKINE_LABELS[c]} {per_item.get(c, 0)}/{n_toci}" for c in CYTOKINES)
    complete = all(per_item.get(c, 0) == n_toci for c in CYTOKINES if c != "ifn_gamma")
    partial_ifn = 0 < per_item.get("ifn_gamma", 0) < n_toci
    out["cytokines_toci_group.panel"] = _claim(complete and partial_ifn, f"patients: {panel}")


def _safety_survival_regression(res: Results, out: dict[str, Reproduced]) -> None:
    inf = res.infection
    out["safety.serious_infection.toci"] = Reproduced(inf.toci)
    out["safety.serious_infection.non_toci"] = Reproduced(inf.non_toci)
    out["safety.serious_infection.p"] = Reproduced(inf.test.p, note=inf.test.name)
    out["safety.gcsf_dose_p"] = Reproduced(res.gcsf[2].p, note="Mann-Whitney U")
    ic = res.icans
    out["safety.icans.patients"] = Reproduced(ic["patients"])
    out["safety.icans.one_grade3_duration_days"] = Reproduced(
        "-",
        status="not reproducible",
        note=f"{ic['grade3plus']} patient with grade >= 3 ICANS; daily ICANS grades are not "
        "in the marts, so its duration cannot be measured",
    )

    surv = res.survival
    out["survival.os_logrank_p"] = Reproduced(surv["os"].logrank.p, note="log-rank")
    out["survival.pfs_logrank_p"] = Reproduced(surv["pfs"].logrank.p, note="log-rank")

    baseline = res.logistic_models["baseline"]
    out["logistic_regression.outcome"] = _claim(True, "received tocilizumab (is_toci)")
    sig = significant_covariates(baseline)
    out["logistic_regression.finding"] = _claim(
        not sig,
        "no covariate p < 0.05" if not sig else f"p < 0.05: {', '.join(sig)}",
        note="baseline model; " + "; ".join(baseline.problems),
    )


def reproduced_values(source: Results | duckdb.DuckDBPyConnection) -> dict[str, Reproduced]:
    """Every reproducible figure, keyed by its path in published_values.yaml."""
    res = results_of(source)
    out: dict[str, Reproduced] = {}
    for part in (
        _study,
        _table2,
        _response_and_crs,
        _treatment,
        _cytokines,
        _safety_survival_regression,
    ):
        part(res, out)
    return out
