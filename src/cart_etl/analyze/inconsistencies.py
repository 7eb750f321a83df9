"""The paper's known inconsistencies (``known_inconsistencies`` of
``reference/paper/published_values.yaml``), each with its arithmetic from the reproduced data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
from scipy import stats as sps

from cart_etl.analyze.cohort import GROUP_NON_TOCI, GROUP_TOCI
from cart_etl.analyze.published import load_published
from cart_etl.analyze.results import Results, results_of
from cart_etl.analyze.table2 import fmt_count, fmt_median_range, fmt_number


@dataclass(frozen=True)
class Explanation:
    """One ``known_inconsistencies`` entry and its arithmetic from the reproduced data."""

    id: str
    where: str
    what: str
    arithmetic: str


def _explain_bonferroni(res: Results, pub: dict[str, Any]) -> str:
    rows = [r for r in res.table2_rows if r.published is not None]
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


def _mrd_alternatives(res: Results) -> str:
    """The usual 2 x 2 tests on the MRD-negative CR counts."""
    mrd = res.mrd
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
    return "; ".join(f"{k} {v:.3f}" for k, v in alternatives.items())


def _explain(res: Results, pub: dict[str, Any]) -> dict[str, Callable[[], str]]:
    rows = {r.spec.id: r for r in res.table2_rows}
    steroid = rows["steroid_mp_equiv_mg"].continuous
    lines = rows["lines_of_therapy"].continuous
    ster = res.steroids
    hr = rows["high_risk"].counts["total"]["yes"]
    icans_t = rows["icans"].counts
    t, n = res.mrd.toci, res.mrd.non_toci
    alt = _mrd_alternatives(res)
    return {
        "bonferroni_not_capped": lambda: _explain_bonferroni(res, pub),
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
    source: Results | duckdb.DuckDBPyConnection, published: dict[str, Any] | None = None
) -> list[Explanation]:
    """Each ``known_inconsistencies`` entry with the arithmetic from the reproduced data."""
    pub = published if published is not None else load_published()
    explain = _explain(results_of(source), pub)
    out = []
    for item in pub.get("known_inconsistencies", []):
        fn = explain.get(item["id"])
        text = fn() if fn else "No explanation implemented for this entry."
        out.append(Explanation(item["id"], item.get("where", ""), item.get("what", ""), text))
    return out
