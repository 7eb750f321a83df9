"""Rendering of a built report: one self-contained HTML page, Markdown and JSON.

``report.build_report`` assembles the content (sections of paragraphs, tables and figure
names, and the machine-readable results); this module only turns it into text.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from cart_etl.analyze.report import Report

TITLE = "Reproduction of Zhou et al., Front. Immunol. 2025;16:1530623"
DOI = "10.3389/fimmu.2025.1530623"
Table = tuple[list[str], list[list[str]]]  # header, rows (already formatted)

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
