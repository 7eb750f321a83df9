"""`cart-etl report`: report.html (one self-contained file), report.md, report.json and
figures/*.png from a store's marts. Opens with published vs reproduced."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pandas as pd

from cart_etl.analyze import figures, outcomes
from cart_etl.analyze.agreement import Agreement, agreement
from cart_etl.analyze.cohort import (
    CYTOKINE_LABELS,
    GROUP_NON_TOCI,
    GROUP_TOCI,
    analysed_details,
    analysed_patients,
    consort_counts,
    cytokine_series,
    require_marts,
)
from cart_etl.analyze.published import (
    Comparison,
    Explanation,
    explain_inconsistencies,
    published_vs_reproduced,
    status_counts,
)
from cart_etl.analyze.regression import LogitResult, logistic_models
from cart_etl.analyze.survival import GROUP_LABELS, SurvivalResult, fmt_days, survival
from cart_etl.analyze.table2 import fmt_median_range, table2

TITLE = "Reproduction of Zhou et al., Front. Immunol. 2025;16:1530623"
DOI = "10.3389/fimmu.2025.1530623"
Table = tuple[list[str], list[list[str]]]  # header, rows (already formatted)


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


def _figure2_section(con: duckdb.DuckDBPyConnection, data: dict[str, Any]) -> Section:
    mrd = outcomes.mrd_negative_cr(con)
    inf = outcomes.serious_infection(con)
    dur = outcomes.crs_duration(con)
    g_t, g_n, g_test = outcomes.gcsf(con)
    resp = outcomes.response_counts(con)
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


def _figure3_section(con: duckdb.DuckDBPyConnection, data: dict[str, Any]) -> Section:
    changes = outcomes.cytokine_changes(con)
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


def build_report(con: duckdb.DuckDBPyConnection, out_dir: Path, store: str = "") -> Report:
    """Compute every result, write the figures under ``out_dir/figures`` and return the
    report content (``write_report`` renders it)."""
    require_marts(con)
    fig_dir = out_dir / "figures"
    data: dict[str, Any] = {}
    comparisons = published_vs_reproduced(con)
    counts = status_counts(comparisons)
    explanations = explain_inconsistencies(con)
    t2 = table2(con)
    flow = consort_counts(con)
    surv = survival(con)
    patients = analysed_patients(con)
    details = analysed_details(con)
    figures.save(figures.figure_consort(flow), fig_dir / "figure1.png")
    figures.save(
        figures.figure_efficacy_safety(
            outcomes.response_counts(con),
            outcomes.mrd_negative_cr(con),
            patients[patients["max_crs_grade"] >= 1],
            outcomes.crs_duration(con),
            outcomes.serious_infection(con),
            details,
            outcomes.gcsf(con)[2].p,
        ),
        fig_dir / "figure2.png",
    )
    figures.save(
        figures.figure_cytokines(cytokine_series(con), outcomes.cytokine_changes(con)),
        fig_dir / "figure3.png",
    )
    figures.save(figures.figure_survival(surv), fig_dir / "figure4.png")
    flow_sec = Section("Figure 1. Study flow", figures=["figure1.png"])
    flow_sec.tables.append(
        ("marts.consort", (["box", "patients"], [[k, str(v)] for k, v in flow.items()]))
    )
    data["consort"] = flow
    data["table2"] = orjson.loads(t2.to_json(orient="records"))
    sections = [
        _comparison_section(comparisons, counts),
        _inconsistency_section(explanations),
        _table2_section(t2),
        flow_sec,
        _figure2_section(con, data),
        _figure3_section(con, data),
        _figure4_section(surv, data),
        _regression_section(logistic_models(con), data),
        _agreement_section(agreement(con), data),
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


# ---- rendering ---------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;
color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}
td.exact{background:#e8f5e9}td.within-tolerance{background:#fffde7}
td.differs{background:#ffebee}td.not-reproducible{background:#eeeeee}
.summary span{display:inline-block;margin-right:1em;padding:2px 8px;border-radius:4px}
img{max-width:100%;border:1px solid #eee}
"""


def _md_inline(text: str) -> str:
    return text.replace("|", "\\|")


def _html_inline(text: str) -> str:
    escaped = html.escape(text)
    parts = escaped.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def _html_table(caption: str, table: Table) -> str:
    header, rows = table
    status_col = header.index("status") if "status" in header else -1
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append(
        "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>"
    )
    out.append("<tbody>")
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            cls = f' class="{v.replace(" ", "-")}"' if i == status_col else ""
            cells.append(f"<td{cls}>{html.escape(v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def render_html(report: Report, fig_dir: Path) -> str:
    """One self-contained HTML page (figures embedded as base64 PNG, no script)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"/>',
        f"<title>{html.escape(TITLE)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(TITLE)}</h1>",
        f"<p>doi:{DOI} · store: <code>{html.escape(report.store)}</code> · generated "
        f"{html.escape(report.generated_at)} by cart-etl report</p>",
        '<p class="summary">'
        + "".join(
            f'<span class="{s.replace(" ", "-")}">{html.escape(s)}: {n}</span>'
            for s, n in report.summary.items()
        )
        + "</p>",
    ]
    for sec in report.sections:
        parts.append(f"<section><h2>{html.escape(sec.title)}</h2>")
        parts += [f"<p>{_html_inline(p)}</p>" for p in sec.paragraphs]
        for name in sec.figures:
            b64 = base64.b64encode((fig_dir / name).read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(sec.title)}" src="data:image/png;base64,{b64}"/>'
                f"<figcaption>{html.escape(name)}</figcaption></figure>"
            )
        parts += [_html_table(c, t) for c, t in sec.tables]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _md_table(caption: str, table: Table) -> str:
    header, rows = table
    lines = [f"*{caption}*", ""] if caption else []
    lines.append("| " + " | ".join(_md_inline(h) for h in header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(_md_inline(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    """The same report as Markdown (figures linked from figures/)."""
    parts = [
        f"# {TITLE}",
        "",
        f"doi:{DOI} · store: `{report.store}` · generated {report.generated_at}",
        "",
        "Summary: " + ", ".join(f"{n} {s}" for s, n in report.summary.items()),
    ]
    for sec in report.sections:
        parts += ["", f"## {sec.title}", ""]
        for p in sec.paragraphs:
            parts += [p, ""]
        for name in sec.figures:
            parts += [f"![{sec.title}](figures/{name})", ""]
        for c, t in sec.tables:
            parts += [_md_table(c, t), ""]
    return "\n".join(parts).rstrip() + "\n"


def _clean(obj: Any) -> Any:
    """Replace non-finite floats by None and numpy scalars by Python numbers (valid JSON)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def render_json(report: Report) -> bytes:
    """Machine-readable report: summary, every comparison, explanations and results."""
    doc = {
        "title": TITLE,
        "doi": DOI,
        "store": report.store,
        "generated_at": report.generated_at,
        "summary": report.summary,
        "published_vs_reproduced": [asdict(c) for c in report.comparisons],
        "known_inconsistencies": [asdict(e) for e in report.inconsistencies],
        "results": report.data,
    }
    return orjson.dumps(_clean(doc), option=orjson.OPT_INDENT_2)


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
