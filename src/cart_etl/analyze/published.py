"""Published vs reproduced: every figure of ``reference/paper/published_values.yaml`` beside
the value reproduced from the marts, the difference and a status.

The yaml is read here only to put the published number beside the reproduced one; every
reproduced value comes from the analysis functions (SQL over ``marts.*``).

Status rules (the comparison is driven by the type of the published value):

* counts: ``exact`` when equal, else ``differs``;
* ``[n, %]``: n must be equal; % ``exact`` when it rounds to the printed decimals,
  ``within tolerance`` when within 0.1 percentage points;
* ``median (min-max)`` / ``lo-hi``: ``exact`` when every number rounds to the printed one
  (|difference| <= 0.005);
* p-values: ``exact`` at the printed 3 decimals, ``within tolerance`` within +/- 0.01 (the
  issue's criterion); printed Bonferroni "P#" against the capped Bonferroni, tolerance 0.1
  (10 x 0.01);
* statements (methods, software, claims such as "within 12 h") are checked where the marts
  allow it; otherwise ``not reproducible`` with the reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import yaml
from scipy import stats as sps

from cart_etl.analyze import outcomes
from cart_etl.analyze.cohort import (
    CYTOKINE_LABELS,
    CYTOKINES,
    GROUP_NON_TOCI,
    GROUP_TOCI,
    consort_counts,
    cytokine_series,
    enrolment_months,
    toci_doses,
)
from cart_etl.analyze.regression import logistic_models, significant_covariates
from cart_etl.analyze.survival import survival
from cart_etl.analyze.table2 import (
    Continuous,
    Count,
    fmt_count,
    fmt_median_range,
    fmt_number,
    table2_rows,
)
from cart_etl.config import PROJECT_ROOT

PUBLISHED_PATH = PROJECT_ROOT / "reference" / "paper" / "published_values.yaml"
STATUSES = ("exact", "within tolerance", "differs", "not reproducible")
P_TOLERANCE = 0.01
P_ADJ_TOLERANCE = 0.1
PCT_TOLERANCE = 0.1
NUMBER_TOLERANCE = 0.0051
MEDIAN_RANGE = re.compile(r"\s*([\d.]+)\s*\(([\d.]+)\s*-\s*([\d.]+)\)\s*")
RANGE = re.compile(r"\s*(\d+)\s*-\s*(\d+)\s*")
COLUMNS = {"total": "total", "toci": GROUP_TOCI, "non_toci": GROUP_NON_TOCI}


@dataclass(frozen=True)
class Reproduced:
    """A reproduced value; ``status`` set only when the generic comparison cannot decide."""

    value: Any
    status: str | None = None
    note: str = ""
    display: str | None = None


@dataclass(frozen=True)
class Comparison:
    """One row of the published-vs-reproduced table."""

    path: str
    published: str
    reproduced: str
    difference: str
    status: str
    note: str = ""
    inconsistency: str = ""


def load_published(path: Path | None = None) -> dict[str, Any]:
    """The transcription of the paper's figures."""
    data: dict[str, Any] = yaml.safe_load((path or PUBLISHED_PATH).read_text(encoding="utf-8"))
    return data


def leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) for every published figure; ``[n, %]`` pairs stay one leaf."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if key == "known_inconsistencies":
            continue
        if isinstance(value, dict):
            yield from leaves(value, f"{path}.")
        else:
            yield path, value


def _decimals(x: float) -> int:
    text = repr(float(x))
    return 0 if float(x).is_integer() else len(text.split(".")[1])


def _is_p(path: str) -> bool:
    last = path.rsplit(".", 1)[-1]
    return last == "p" or last.endswith("_p") or last.startswith("p_")


def compare(path: str, published: Any, rep: Reproduced) -> tuple[str, str, str]:
    """(reproduced text, difference text, status) by the rules of the module docstring."""
    value = rep.value
    if rep.status is not None:
        return rep.display or str(value), "", rep.status
    if path.endswith("p_adj_printed"):
        diff = float(value) - float(published)
        status = (
            "exact"
            if round(float(value), 2) == float(published)
            else "within tolerance"
            if abs(diff) <= P_ADJ_TOLERANCE
            else "differs"
        )
        return f"{value:.3f}", f"{diff:+.3f}", status
    if _is_p(path) and isinstance(published, float | int):
        diff = float(value) - float(published)
        status = (
            "exact"
            if round(float(value), 3) == round(float(published), 3)
            else "within tolerance"
            if abs(diff) <= P_TOLERANCE
            else "differs"
        )
        return f"{value:.4f}", f"{diff:+.4f}", status
    if isinstance(published, list) and isinstance(value, Count):
        n_pub, pct_pub = published
        pct_diff = value.pct - float(pct_pub)
        if value.n != n_pub:
            status = "differs"
        elif round(value.pct, _decimals(pct_pub)) == float(pct_pub):
            status = "exact"
        else:
            status = "within tolerance" if abs(pct_diff) <= PCT_TOLERANCE else "differs"
        decimals = max(1, _decimals(pct_pub))
        return (
            f"{value.n} ({value.pct:.{decimals}f})",
            f"n {value.n - n_pub:+d}, % {pct_diff:+.2f}",
            status,
        )
    if isinstance(published, str) and isinstance(value, Continuous):
        m = MEDIAN_RANGE.fullmatch(published)
        if m:
            pub = [float(g) for g in m.groups()]
            got = [value.median, value.min, value.max]
            diffs = [g - p for g, p in zip(got, pub, strict=True)]
            ok = all(abs(d) <= NUMBER_TOLERANCE for d in diffs)
            text = " / ".join(fmt_number(round(d, 4)) for d in diffs)
            return fmt_median_range(value), text, "exact" if ok else "differs"
    if isinstance(published, str) and isinstance(value, tuple):
        m = RANGE.fullmatch(published)
        if m:
            pub_range = (int(m[1]), int(m[2]))
            text = f"{value[0]}-{value[1]}"
            return text, "", "exact" if tuple(value) == pub_range else "differs"
    if isinstance(published, int | float) and isinstance(value, int | float):
        diff = float(value) - float(published)
        return fmt_number(float(value)), f"{diff:+g}", "exact" if diff == 0 else "differs"
    return str(value), "", "not reproducible"


def _descriptive(note: str) -> Reproduced:
    return Reproduced("-", status="not reproducible", note=note)


def _claim(holds: bool, display: str, note: str = "") -> Reproduced:
    return Reproduced(display, status="exact" if holds else "differs", note=note, display=display)


def reproduced_values(con: duckdb.DuckDBPyConnection) -> dict[str, Reproduced]:
    """Every reproducible figure, keyed by its path in published_values.yaml."""
    out: dict[str, Reproduced] = {}
    flow = consort_counts(con)
    for key, box in {
        "n_screened": "screened",
        "n_progressed_before_infusion": "excluded:not_infused",
        "n_infused": "infused",
        "n_excluded_followup_lt_28d": "excluded:followup_lt_28d",
        "n_excluded_data_lost": "excluded:data_lost",
        "n_included": "analysed",
        "n_toci": "analysed:toci",
        "n_non_toci": "analysed:no_toci",
    }.items():
        out[f"study.{key}"] = Reproduced(flow.get(box, 0))
    months = enrolment_months(con)
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

    for row in table2_rows(con):
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

    resp = outcomes.response_counts(con)
    for response in ("mrd_neg_cr", "mrd_pos_cr", "pr"):
        out[f"response_day28.{response}"] = Reproduced(int(resp["total"][response]))
    mrd = outcomes.mrd_negative_cr(con)
    out["response_day28.toci_mrd_neg_cr"] = Reproduced(mrd.toci)
    out["response_day28.non_toci_mrd_neg_cr"] = Reproduced(mrd.non_toci)
    out["response_day28.p_mrd_neg_cr_toci_vs_non"] = Reproduced(mrd.test.p, note=mrd.test.name)

    grades = outcomes.crs_grade_counts(con)
    n_analysed = flow.get("analysed", 0)
    out["crs.any_grade"] = Reproduced(Count(sum(grades[g] for g in (1, 2, 3, 4)), n_analysed))
    for g in (1, 2, 3, 4):
        out[f"crs.g{g}"] = Reproduced(grades[g])
    dur = outcomes.crs_duration(con)
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

    toci = outcomes.tocilizumab(con)
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
    doses = toci_doses(con)
    max_mg_kg = float(doses["dose_mg_per_kg"].max())
    out["tocilizumab.label_dose"] = _claim(
        toci.doses_over_label == 0 and max_mg_kg <= 8.05,
        f"{toci.doses_over_label} doses > 800 mg; max {max_mg_kg:.2f} mg/kg",
    )

    ster = outcomes.steroids(con)
    out["corticosteroids.patients"] = Reproduced(ster.patients)
    out["corticosteroids.cumulative_mp_equiv_mg"] = Reproduced(ster.among_treated)
    out["corticosteroids.non_toci_steroid_only.patients"] = Reproduced(ster.non_toci_only)
    for g in (1, 2, 3):
        out[f"corticosteroids.non_toci_steroid_only.g{g}"] = Reproduced(
            ster.non_toci_only_by_grade.get(g, 0)
        )

    changes = outcomes.cytokine_changes(con)
    il6 = changes["il6"]
    out["cytokines_toci_group.monitored"] = Reproduced(il6.monitored)
    out["cytokines_toci_group.decreased_after_toci"] = Reproduced(Count(il6.fell, il6.monitored))
    out["cytokines_toci_group.il6_still_elevated"] = Reproduced(
        Count(il6.monitored - il6.fell, il6.monitored)
    )
    series = cytokine_series(con)
    per_item = series.groupby("item")["person_id"].nunique().to_dict()
    n_toci = toci.patients
    panel = ", ".join(f"{CYTOKINE_LABELS[c]} {per_item.get(c, 0)}/{n_toci}" for c in CYTOKINES)
    complete = all(per_item.get(c, 0) == n_toci for c in CYTOKINES if c != "ifn_gamma")
    partial_ifn = 0 < per_item.get("ifn_gamma", 0) < n_toci
    out["cytokines_toci_group.panel"] = _claim(complete and partial_ifn, f"patients: {panel}")

    inf = outcomes.serious_infection(con)
    out["safety.serious_infection.toci"] = Reproduced(inf.toci)
    out["safety.serious_infection.non_toci"] = Reproduced(inf.non_toci)
    out["safety.serious_infection.p"] = Reproduced(inf.test.p, note=inf.test.name)
    out["safety.gcsf_dose_p"] = Reproduced(outcomes.gcsf(con)[2].p, note="Mann-Whitney U")
    ic = outcomes.icans(con)
    out["safety.icans.patients"] = Reproduced(ic["patients"])
    out["safety.icans.one_grade3_duration_days"] = Reproduced(
        "-",
        status="not reproducible",
        note=f"{ic['grade3plus']} patient with grade >= 3 ICANS; daily ICANS grades are not "
        "in the marts, so its duration cannot be measured",
    )

    surv = survival(con)
    out["survival.os_logrank_p"] = Reproduced(surv["os"].logrank.p, note="log-rank")
    out["survival.pfs_logrank_p"] = Reproduced(surv["pfs"].logrank.p, note="log-rank")

    models = logistic_models(con)
    baseline = models["baseline"]
    out["logistic_regression.outcome"] = _claim(True, "received tocilizumab (is_toci)")
    sig = significant_covariates(baseline)
    out["logistic_regression.finding"] = _claim(
        not sig,
        "no covariate p < 0.05" if not sig else f"p < 0.05: {', '.join(sig)}",
        note="baseline model; " + "; ".join(baseline.problems),
    )
    return out


# Where a published figure is one of the paper's known inconsistencies.
INCONSISTENCY_OF: dict[str, str] = {
    "table2.steroid_mp_equiv_mg.total": "steroid_total_range",
    "table2.lines_of_therapy.non_toci": "lines_non_integer",
    "corticosteroids.patients": "steroid_patient_count",
    "corticosteroids.cumulative_mp_equiv_mg": "steroid_cumulative_median",
    "response_day28.p_mrd_neg_cr_toci_vs_non": "mrd_cr_p",
}


def _fmt_published(value: Any) -> str:
    if isinstance(value, list):
        if len(value) == 2 and all(isinstance(v, int | float) for v in value):
            return f"{value[0]} ({value[1]})"
        return ", ".join(str(v) for v in value)
    return str(value)


def published_vs_reproduced(
    con: duckdb.DuckDBPyConnection, published: dict[str, Any] | None = None
) -> list[Comparison]:
    """Every published figure with the reproduced value, difference and status."""
    pub = published if published is not None else load_published()
    rep = reproduced_values(con)
    rows = []
    for path, value in leaves(pub):
        r = rep.get(path)
        if r is None:
            rows.append(
                Comparison(
                    path,
                    _fmt_published(value),
                    "-",
                    "",
                    "not reproducible",
                    "no reproducer: not derivable from the marts",
                )
            )
            continue
        text, diff, status = compare(path, value, r)
        incons = INCONSISTENCY_OF.get(path, "")
        if path.endswith("p_adj_printed") and float(value) > 1:
            incons = "bonferroni_not_capped"
        rows.append(Comparison(path, _fmt_published(value), text, diff, status, r.note, incons))
    return rows


def status_counts(rows: list[Comparison]) -> dict[str, int]:
    """Rows per status, in STATUSES order."""
    return {s: sum(r.status == s for r in rows) for s in STATUSES}


# ---- known inconsistencies --------------------------------------------------------------


@dataclass(frozen=True)
class Explanation:
    """One ``known_inconsistencies`` entry and its arithmetic from the reproduced data."""

    id: str
    where: str
    what: str
    arithmetic: str


def _explain_bonferroni(con: duckdb.DuckDBPyConnection, pub: dict[str, Any]) -> str:
    rows = [r for r in table2_rows(con) if r.published is not None]
    parts = []
    for r in rows:
        printed = pub["table2"][r.spec.id].get("p_adj_printed")
        paper_p = pub["table2"][r.spec.id].get("p")
        if printed is not None and float(printed) > 1:
            parts.append(
                f"{r.spec.id}: 10 x {paper_p} = {10 * float(paper_p):g} (printed {printed})"
            )
    m = len(rows)
    return (
        f"The printed P# equals m x P with m = {m} tests and no cap: "
        + "; ".join(parts)
        + f". A Bonferroni-adjusted p is min(1, {m} x p), so each of these is 1.000; Holm "
        "(step-down) gives the same or smaller values. This report prints the capped "
        "Bonferroni and Holm columns and flags the uncapped convention."
    )


def _explain(con: duckdb.DuckDBPyConnection, pub: dict[str, Any]) -> dict[str, Callable[[], str]]:
    rows = {r.spec.id: r for r in table2_rows(con)}
    steroid = rows["steroid_mp_equiv_mg"].continuous
    lines = rows["lines_of_therapy"].continuous
    ster = outcomes.steroids(con)
    hr = rows["high_risk"].counts["total"]["yes"]
    icans_t = rows["icans"].counts
    mrd = outcomes.mrd_negative_cr(con)
    t, n = mrd.toci, mrd.non_toci
    table = [[t.n, t.denominator - t.n], [n.n, n.denominator - n.n]]
    alternatives = {
        "Fisher exact two-sided": mrd.test.p,
        "Fisher one-sided (greater)": float(sps.fisher_exact(table, alternative="greater").pvalue),
        "Pearson χ²": float(sps.chi2_contingency(table, correction=False)[1]),
        "Yates χ²": float(sps.chi2_contingency(table, correction=True)[1]),
        "Barnard exact": float(sps.barnard_exact(table).pvalue),
        "Boschloo exact": float(sps.boschloo_exact(table).pvalue),
    }
    alt = "; ".join(f"{k} {v:.3f}" for k, v in alternatives.items())
    return {
        "bonferroni_not_capped": lambda: _explain_bonferroni(con, pub),
        "steroid_total_range": lambda: (
            f"Group maxima reproduced: tocilizumab {fmt_number(steroid[GROUP_TOCI].max)} mg, "
            f"no tocilizumab {fmt_number(steroid[GROUP_NON_TOCI].max)} mg; the total maximum is "
            f"max({fmt_number(steroid[GROUP_TOCI].max)}, "
            f"{fmt_number(steroid[GROUP_NON_TOCI].max)}) = {fmt_number(steroid['total'].max)} "
            f"mg, so the printed total range ending at 800 mg cannot hold. Reproduced total: "
            f"{fmt_median_range(steroid['total'])}."
        ),
        "steroid_patient_count": lambda: (
            f"The tocilizumab-group minimum is {fmt_number(steroid[GROUP_TOCI].min)} mg > 0, so "
            f"all {ster.toci_patients} tocilizumab patients received steroids; with the "
            f"{ster.non_toci_only} steroid-only non-tocilizumab patients of the text that is "
            f"{ster.toci_patients} + {ster.non_toci_only} = {ster.patients}, not 25 (25 would "
            "need 15 tocilizumab patients with steroids, contradicting the Table 2 minimum)."
        ),
        "steroid_cumulative_median": lambda: (
            f"The text's 100 (7.5-302.5) mg among 25 treated cannot describe the Table 2 "
            f"patients: its maximum 302.5 mg exceeds both group maxima "
            f"({fmt_number(steroid[GROUP_TOCI].max)} and {fmt_number(steroid[GROUP_NON_TOCI].max)}"
            f" mg). Reproduced among the {ster.patients} steroid-treated patients (systemic, days "
            f"0-28, MP-equivalent): {fmt_median_range(ster.among_treated)} mg."
        ),
        "lines_non_integer": lambda: (
            f"Lines of therapy are whole numbers. With {lines[GROUP_NON_TOCI].n} patients (even) "
            "the median is the mean of the two middle values, so 2.5 is possible; a range "
            "cannot be fractional: reproduced "
            f"{fmt_median_range(lines[GROUP_NON_TOCI])} (printed 2.5 (1.5-3.5))."
        ),
        "high_risk_pct": lambda: (
            f"{hr.n}/{hr.denominator} = {hr.pct:.2f} % (Table 2: 84.4 %); 84.8 % would need "
            f"{0.848 * hr.denominator:.2f} patients: a rounding or typing slip in the text."
        ),
        "icans_pct": lambda: (
            f"{icans_t['total']['yes'].n}/{icans_t['total']['yes'].denominator} = "
            f"{icans_t['total']['yes'].pct:.2f} % (Table 2: 4.4 %); the text's 4.5 % rounds "
            "4.44 up."
        ),
        "icans_toci_text": lambda: (
            f"Reproduced ICANS: {fmt_count(icans_t[GROUP_TOCI]['yes'])} in the tocilizumab "
            f"group and {fmt_count(icans_t[GROUP_NON_TOCI]['yes'])} without; Table 2 is "
            "followed, the sentence 'no cases of ICANS' is contradicted by it."
        ),
        "mrd_cr_p": lambda: (
            f"MRD-negative CR {t.n}/{t.denominator} vs {n.n}/{n.denominator}: {alt}. None of "
            "the usual 2 x 2 tests on these counts gives 0.616; the printed p does not follow "
            "from the printed counts (percentages 94.12 % and 85.71 % match the counts)."
        ),
    }


def explain_inconsistencies(
    con: duckdb.DuckDBPyConnection, published: dict[str, Any] | None = None
) -> list[Explanation]:
    """Each ``known_inconsistencies`` entry with the arithmetic from the reproduced data."""
    pub = published if published is not None else load_published()
    explain = _explain(con, pub)
    out = []
    for item in pub.get("known_inconsistencies", []):
        fn = explain.get(item["id"])
        text = fn() if fn else "No explanation implemented for this entry."
        out.append(Explanation(item["id"], item.get("where", ""), item.get("what", ""), text))
    return out


def fmt_pct(x: float) -> str:
    """A percentage with one decimal (NaN as 'NA')."""
    return "NA" if math.isnan(x) else f"{x:.1f}"
