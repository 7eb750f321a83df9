"""`cart-etl report`: report.html (one self-contained file), report.md, report.json and
figures/*.png from a store's marts. Opens with published vs reproduced.

This module assembles the report (sections, figures, machine-readable results) from one
``results.Results``, so every result is computed once; ``render`` writes it as HTML,
Markdown and JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pandas as pd

from cart_etl.analyze import figures
from cart_etl.analyze.agreement import Agreement
from cart_etl.analyze.cohort import CYTOKINE_LABELS, GROUP_NON_TOCI, GROUP_TOCI, require_marts
from cart_etl.analyze.inconsistencies import Explanation, explain_inconsistencies
from cart_etl.analyze.published import (
    Comparison,
    load_published,
    published_vs_reproduced,
    status_counts,
)
from cart_etl.analyze.regression import LogitResult
from cart_etl.analyze.render import Table, render_html, render_json, render_markdown
from cart_etl.analyze.results import Results
from cart_etl.analyze.survival import GROUP_LABELS, SurvivalResult, fmt_days
from cart_etl.analyze.table2 import fmt_median_range
from cart_etl.load.duckdb_store import connect


@dataclass
class Section:
    """A report section: paragraphs, tables and figures, rendered to HTML and Markdown."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, Table]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)  # file names under figures/


@dataclass
class Report:
    """Everything written by ``write_report``."""

    store: str
    generated_at: str
    summary: dict[str, int]
    sections: list[Section]
    comparisons: list[Comparison]
    inconsistencies: list[Explanation]
    data: dict[str, Any]


def _p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return _p(value)
    return str(value)


def _frame_table(frame: pd.DataFrame, columns: dict[str, str]) -> Table:
    header = list(columns.values())
    rows = [[_cell(r[c]) for c in columns] for _, r in frame.iterrows()]
    return header, rows


def _comparison_section(rows: list[Comparison], counts: dict[str, int]) -> Section:
    total = sum(counts.values())
    sec = Section("Published vs reproduced")
    sec.paragraphs.append(
        f"Every figure of reference/paper/published_values.yaml ({total}) beside the value "
        "reproduced from the store's marts: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + ". Rules: counts exact; percentages exact at the printed decimals (within 0.1 "
        "point = within tolerance); p-values exact at 3 decimals, within tolerance at "
        "± 0.01; printed P# compared with the Bonferroni p capped at 1 (tolerance 0.1). "
        "'known inconsistency' names the entry explained in the next section."
    )
    header = ["published figure", "published", "reproduced", "difference", "status", "note"]
    body = [
        [
            r.path,
            r.published,
            r.reproduced,
            r.difference,
            r.status,
            (f"known inconsistency: {r.inconsistency}. " if r.inconsistency else "") + r.note,
        ]
        for r in rows
    ]
    sec.tables.append(("", (header, body)))
    return sec


def _inconsistency_section(items: list[Explanation]) -> Section:
    sec = Section("The paper's known inconsistencies, with the arithmetic")
    for e in items:
        sec.paragraphs.append(f"**{e.id}** ({e.where}): {e.what}. — {e.arithmetic}")
    return sec


def _table2_section(frame: pd.DataFrame) -> Section:
    n = frame.attrs.get("n", {})
    sec = Section("Table 2. Characteristics by tocilizumab group")
    sec.paragraphs.append(
        f"Analysed patients: {n.get('total')} (tocilizumab {n.get(GROUP_TOCI)}, no tocilizumab "
        f"{n.get(GROUP_NON_TOCI)}). Median (min-max) or n (%). Two test choices per row: the "
        "as-published test (mappings/analysis/table2.yaml) and the principled rule "
        "(continuous: Mann-Whitney U; categorical: Pearson χ² if every expected count ≥ 5, "
        "else Fisher / Fisher-Freeman-Halton exact). Adjusted over the 10 tested rows: "
        "Bonferroni capped at 1 and Holm; 'paper P#' repeats the paper's convention "
        "(10 × p, uncapped) and 'invalid' marks values above 1."
    )
    cols = {
        "characteristic": "characteristic",
        "total": f"total (n={n.get('total')})",
        GROUP_TOCI: f"tocilizumab (n={n.get(GROUP_TOCI)})",
        GROUP_NON_TOCI: f"no tocilizumab (n={n.get(GROUP_NON_TOCI)})",
        "published_test": "as-published test",
        "p_published_test": "p",
        "p_bonferroni": "Bonferroni",
        "p_holm": "Holm",
        "p_paper_convention": "paper P# (10×p)",
        "paper_convention_invalid": "invalid",
        "principled_test": "principled test",
        "p_principled": "p (principled)",
        "p_principled_holm": "Holm (principled)",
        "note": "why",
    }
    shown = frame.copy()
    shown["p_paper_convention"] = shown["p_paper_convention"].map(
        lambda v: "" if pd.isna(v) else f"{v:.2f}"
    )
    sec.tables.append(("", _frame_table(shown, cols)))
    return sec


def _figure2_section(res: Results, data: dict[str, Any]) -> Section:
    mrd = res.mrd
    inf = res.infection
    dur = res.crs_duration
    g_t, g_n, g_test = res.gcsf
    resp = res.response
    sec = Section("Figure 2. Efficacy and safety", figures=["figure2.png"])
    sec.paragraphs.append(
        f"Day-28 MRD-negative CR: {mrd.toci.n}/{mrd.toci.denominator} "
        f"({mrd.toci.pct:.2f} %) with tocilizumab vs {mrd.non_toci.n}/"
        f"{mrd.non_toci.denominator} ({mrd.non_toci.pct:.2f} %) without; Fisher exact "
        f"p = {_p(mrd.test.p)} (printed 0.616: see mrd_cr_p above)."
    )
    sec.paragraphs.append(
        f"CRS duration (patients with CRS): {fmt_median_range(dur.toci)} d with tocilizumab "
        f"vs {fmt_median_range(dur.non_toci)} d without (Mann-Whitney p = "
        f"{_p(dur.overall.p)})."
    )
    rows = []
    for stratum, (t, n, test) in dur.by_grade.items():
        rows.append(
            [
                f"grade {stratum}",
                f"{fmt_median_range(t)} (n={t.n})",
                f"{fmt_median_range(n)} (n={n.n})",
                _p(test.p) if test else "no comparison",
            ]
        )
    sec.tables.append(
        (
            "CRS duration (days) by maximum grade, Mann-Whitney U",
            (["stratum", "tocilizumab", "no tocilizumab", "p"], rows),
        )
    )
    sec.paragraphs.append(
        f"Serious infection (CTCAE ≥ 3): {inf.toci.n}/{inf.toci.denominator} vs "
        f"{inf.non_toci.n}/{inf.non_toci.denominator}, Fisher p = {_p(inf.test.p)}. "
        f"G-CSF total dose: {fmt_median_range(g_t)} µg vs {fmt_median_range(g_n)} µg, "
        f"Mann-Whitney p = {_p(g_test.p)}."
    )
    resp_rows = [[str(i), *(str(int(v)) for v in r)] for i, r in resp.iterrows()]
    sec.tables.append(
        ("Day-28 response", (["response", "tocilizumab", "no tocilizumab", "total"], resp_rows))
    )
    data["figure2"] = {
        "mrd_neg_cr": {
            "toci": asdict(mrd.toci),
            "non_toci": asdict(mrd.non_toci),
            "fisher_p": mrd.test.p,
        },
        "serious_infection": {
            "toci": asdict(inf.toci),
            "non_toci": asdict(inf.non_toci),
            "fisher_p": inf.test.p,
        },
        "crs_duration": {
            "toci": asdict(dur.toci),
            "non_toci": asdict(dur.non_toci),
            "by_grade": {
                k: {"toci": asdict(t), "non_toci": asdict(n), "p": test.p if test else None}
                for k, (t, n, test) in dur.by_grade.items()
            },
        },
        "gcsf": {"toci": asdict(g_t), "non_toci": asdict(g_n), "mann_whitney_p": g_test.p},
        "response": {str(k): {c: int(v) for c, v in r.items()} for k, r in resp.iterrows()},
    }
    return sec


def _figure3_section(res: Results, data: dict[str, Any]) -> Section:
    changes = res.cytokine_changes
    sec = Section("Figure 3. Cytokines around the first tocilizumab dose", figures=["figure3.png"])
    sec.paragraphs.append(
        "Rule (README): the last sample before the first tocilizumab dose vs the first sample "
        "24-72 h after it; paired Wilcoxon signed-rank test on the values."
    )
    rows = [
        [
            CYTOKINE_LABELS[c.item],
            str(c.monitored),
            f"{c.fell}/{c.monitored}",
            f"{c.median_before:g}",
            f"{c.median_after:g}",
            _p(c.test.p) if c.test else "",
        ]
        for c in changes.values()
    ]
    sec.tables.append(
        (
            "",
            (["cytokine", "patients", "fell", "median before", "median after", "Wilcoxon p"], rows),
        )
    )
    data["figure3"] = {
        k: {**asdict(v), "test": asdict(v.test) if v.test else None} for k, v in changes.items()
    }
    return sec


def _figure4_section(results: dict[str, SurvivalResult], data: dict[str, Any]) -> Section:
    sec = Section("Figure 4. Overall and progression-free survival", figures=["figure4.png"])
    rows = []
    out: dict[str, Any] = {}
    for key, res in results.items():
        out[key] = {"logrank_p": res.logrank.p, "groups": {}}
        for g, gs in res.groups.items():
            lo, hi = gs.median_ci
            rows.append(
                [
                    key.upper(),
                    GROUP_LABELS[g],
                    str(gs.n),
                    str(gs.events),
                    fmt_days(gs.median_days),
                    f"{fmt_days(lo)}-{fmt_days(hi)}",
                    _p(res.logrank.p),
                ]
            )
            out[key]["groups"][g] = {
                "n": gs.n,
                "events": gs.events,
                "median_days": gs.median_days,
                "median_ci": [lo, hi],
                "at_risk": gs.at_risk,
            }
    sec.tables.append(
        (
            "Kaplan-Meier medians (days) and log-rank test",
            (["endpoint", "group", "n", "events", "median", "95% CI", "log-rank p"], rows),
        )
    )
    data["figure4"] = out
    return sec


def _regression_section(models: dict[str, LogitResult], data: dict[str, Any]) -> Section:
    sec = Section("Supplementary Table S4. Logistic regression of receiving tocilizumab")
    out: dict[str, Any] = {}
    for name, m in models.items():
        state = "estimated" if m.estimable else "NOT ESTIMABLE"
        sec.paragraphs.append(
            f"Model '{name}' ({m.n} patients, {m.events} events, {len(m.covariates)} "
            f"covariates): {state}. " + " ".join(f"Problem: {p}." for p in m.problems)
        )
        if m.table is not None and m.estimable:
            rows = [
                [str(c), f"{r['or']:.2f}", f"{r['ci_low']:.2f}-{r['ci_high']:.2f}", _p(r["p"])]
                for c, r in m.table.iterrows()
            ]
            sec.tables.append((f"model {name}", (["covariate", "OR", "95% CI", "p"], rows)))
        out[name] = {
            "n": m.n,
            "events": m.events,
            "covariates": m.covariates,
            "estimable": m.estimable,
            "problems": m.problems,
            "table": None
            if m.table is None
            else m.table.reset_index(names="covariate").to_dict(orient="records"),
        }
    data["s4_logistic"] = out
    return sec


def _agreement_section(a: Agreement, data: dict[str, Any]) -> Section:
    sec = Section("Derived ASTCT grade vs physician-recorded grade")
    sec.paragraphs.append(
        f"{a.n} analysed patients with both grades; identical in {a.exact_agreement}. "
        f"Weighted Cohen's κ: linear {a.kappa_linear:.3f}, quadratic {a.kappa_quadratic:.3f}. "
        "Rows: grade derived from the charted signals (ASTCT 2019); columns: recorded."
    )
    header = ["derived \\ recorded", *(str(c) for c in a.confusion.columns)]
    rows = [[str(i), *(str(int(v)) for v in r)] for i, r in a.confusion.iterrows()]
    sec.tables.append(("", (header, rows)))
    data["grade_agreement"] = {
        "n": a.n,
        "identical": a.exact_agreement,
        "kappa_linear": a.kappa_linear,
        "kappa_quadratic": a.kappa_quadratic,
        "confusion": a.confusion.to_numpy().tolist(),
    }
    return sec


def _write_figures(res: Results, fig_dir: Path) -> None:
    """figures/figure1.png ... figure4.png from the computed results."""
    patients = res.patients
    figures.save(figures.figure_consort(res.consort), fig_dir / "figure1.png")
    figures.save(
        figures.figure_efficacy_safety(
            res.response,
            res.mrd,
            patients[patients["max_crs_grade"] >= 1],
            res.crs_duration,
            res.infection,
            res.details,
            res.gcsf[2].p,
        ),
        fig_dir / "figure2.png",
    )
    figures.save(
        figures.figure_cytokines(res.cytokine_series, res.cytokine_changes),
        fig_dir / "figure3.png",
    )
    figures.save(figures.figure_survival(res.survival), fig_dir / "figure4.png")


def build_report(con: duckdb.DuckDBPyConnection, out_dir: Path, store: str = "") -> Report:
    """Compute every result once, write the figures under ``out_dir/figures`` and return the
    report content (``write_report`` renders it)."""
    require_marts(con)
    res = Results(con)
    published = load_published()
    comparisons = published_vs_reproduced(res, published)
    counts = status_counts(comparisons)
    explanations = explain_inconsistencies(res, published)
    _write_figures(res, out_dir / "figures")
    flow = res.consort
    flow_sec = Section("Figure 1. Study flow", figures=["figure1.png"])
    flow_sec.tables.append(
        ("marts.consort", (["box", "patients"], [[k, str(v)] for k, v in flow.items()]))
    )
    data: dict[str, Any] = {
        "consort": flow,
        "table2": orjson.loads(res.table2.to_json(orient="records")),
    }
    sections = [
        _comparison_section(comparisons, counts),
        _inconsistency_section(explanations),
        _table2_section(res.table2),
        flow_sec,
        _figure2_section(res, data),
        _figure3_section(res, data),
        _figure4_section(res.survival, data),
        _regression_section(res.logistic_models, data),
        _agreement_section(res.agreement, data),
    ]
    return Report(
        store=store,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        summary=counts,
        sections=sections,
        comparisons=comparisons,
        inconsistencies=explanations,
        data=data,
    )


@dataclass(frozen=True)
class ReportPaths:
    """Files written by ``write_report``."""

    html: Path
    markdown: Path
    json: Path
    figures: Sequence[Path]


def write_report(
    con: duckdb.DuckDBPyConnection, out_dir: Path, store: str = ""
) -> tuple[Report, ReportPaths]:
    """Build and write report.html, report.md, report.json and figures/*.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(con, out_dir, store)
    fig_dir = out_dir / "figures"
    paths = ReportPaths(
        out_dir / "report.html",
        out_dir / "report.md",
        out_dir / "report.json",
        sorted(fig_dir.glob("*.png")),
    )
    paths.html.write_text(render_html(report, fig_dir), encoding="utf-8")
    paths.markdown.write_text(render_markdown(report), encoding="utf-8")
    paths.json.write_bytes(render_json(report))
    return report, paths


def report_store(store: Path, out_dir: Path) -> tuple[Report, ReportPaths]:
    """Open the store file read-only and write its report under ``out_dir``.

    Raises:
        StoreError: the store cannot be opened or has no filled marts.
    """
    con = connect(store, read_only=True)
    try:
        return write_report(con, out_dir, store=str(store))
    finally:
        con.close()
