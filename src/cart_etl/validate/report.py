"""The data manager's validation report: validation.json and a self-contained validation.html."""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from cart_etl.errors import FailureCase
from cart_etl.validate.rules import RULES

EXAMPLES_PER_RULE = 5


@dataclass
class FileSummary:
    """Row accounting for one input file/table: rows_in == accepted + quarantined."""

    source: str
    file: str
    rows_in: int
    accepted: int
    quarantined: int
    warnings: int = 0
    unaccounted: int = 0  # input rows neither loaded nor quarantined: always 0 (tested)


@dataclass
class ValidationReport:
    """Everything `cart-etl validate` found, in the order a data manager reads it."""

    source: str
    site: str | None
    files: list[FileSummary]
    quarantined: list[FailureCase]
    warnings: list[FailureCase]
    expectations: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # FHIR sources: per-resource accounting (emitted / out of scope / rejected), by type/code.
    fhir: dict[str, Any] | None = None
    generated_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )

    @property
    def exit_code(self) -> int:
        """0 clean; 1 rows quarantined, warnings, or a failed expectation."""
        failed_gx = any(not e.get("success", True) for e in self.expectations)
        return 1 if self.quarantined or self.warnings or failed_gx else 0

    def rule_counts(self) -> list[tuple[str, str, int]]:
        """(rule_id, severity, count) sorted by count, quarantine first."""
        counts = Counter((c.rule_id, "quarantine") for c in self.quarantined)
        counts.update((c.rule_id, "warning") for c in self.warnings)
        return sorted(
            ((r, s, n) for (r, s), n in counts.items()),
            key=lambda t: (t[1] != "quarantine", -t[2], t[0]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at,
            "source": self.source,
            "site": self.site,
            "exit_code": self.exit_code,
            "summary": {
                "files": len(self.files),
                "rows_in": sum(f.rows_in for f in self.files),
                "rows_accepted": sum(f.accepted for f in self.files),
                "rows_quarantined": sum(f.quarantined for f in self.files),
                "quarantine_cases": len(self.quarantined),
                "warnings": len(self.warnings),
                "expectations_failed": sum(not e.get("success", True) for e in self.expectations),
            },
            "files": [asdict(f) for f in self.files],
            "rules": [
                {"rule_id": r, "severity": s, "count": n, **_rule_text(r)}
                for r, s, n in self.rule_counts()
            ],
            "quarantined": [asdict(c) for c in self.quarantined],
            "warnings": [asdict(c) for c in self.warnings],
            "expectations": self.expectations,
            "notes": self.notes,
            **({"fhir": self.fhir} if self.fhir is not None else {}),
        }


def _rule_text(rule_id: str) -> dict[str, str]:
    rule = RULES.get(rule_id)
    return {"checks": rule.checks, "fix": rule.fix} if rule else {"checks": rule_id, "fix": ""}


def write_report(report: ValidationReport, out_dir: Path) -> tuple[Path, Path]:
    """Write validation.json and validation.html into ``out_dir``; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "validation.json"
    json_path.write_bytes(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2))
    html_path = out_dir / "validation.html"
    html_path.write_text(render_html(report), encoding="utf-8")
    return html_path, json_path


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def render_html(report: ValidationReport) -> str:
    """One self-contained page: verdict, per-file accounting, then each rule with examples."""
    data = report.to_json()
    s = data["summary"]
    verdict = {
        0: ("Clean: nothing to fix", "ok"),
        1: ("Action needed: see the rules below", "warn"),
    }[report.exit_code]
    by_rule: dict[tuple[str, str], list[FailureCase]] = defaultdict(list)
    for c in report.quarantined:
        by_rule[(c.rule_id, "quarantine")].append(c)
    for c in report.warnings:
        by_rule[(c.rule_id, "warning")].append(c)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Validation report - {_esc(report.site or report.source)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:75em}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
        ".ok{background:#e6f4ea}.warn{background:#fef7e0}.quarantine{color:#a50e0e}.warning{color:#8a6d00}"
        "code{background:#f4f4f4;padding:0 .2em}</style></head><body>",
        f"<h1>Validation report: {_esc(report.site or report.source)}</h1>",
        f"<p class='{verdict[1]}' style='padding:.6em'><strong>{verdict[0]}</strong></p>",
        f"<p>Source: <code>{_esc(report.source)}</code> - generated {_esc(report.generated_at)}</p>",
        "<h2>Summary</h2><table>",
        f"<tr><th>Rows read</th><td>{s['rows_in']:,}</td></tr>",
        f"<tr><th>Rows accepted</th><td>{s['rows_accepted']:,}</td></tr>",
        f"<tr><th>Rows quarantined (not loaded)</th><td>{s['rows_quarantined']:,}</td></tr>",
        f"<tr><th>Warnings (loaded, please check)</th><td>{s['warnings']:,}</td></tr>",
        f"<tr><th>Failed expectations</th><td>{s['expectations_failed']}</td></tr></table>",
        "<h2>What to fix, by rule</h2>",
    ]
    if not by_rule:
        parts.append("<p>No rule was broken.</p>")
    for rule_id, severity, count in report.rule_counts():
        text = _rule_text(rule_id)
        parts.append(f"<h3 class='{severity}'>{_esc(rule_id)} - {count:,} {severity}</h3>")
        parts.append(
            f"<p><strong>Checks:</strong> {_esc(text['checks'])}<br><strong>Fix:</strong> {_esc(text['fix'])}</p>"
        )
        parts.append(
            "<table><tr><th>file</th><th>row</th><th>field</th><th>value</th><th>message</th></tr>"
        )
        for c in by_rule[(rule_id, severity)][:EXAMPLES_PER_RULE]:
            parts.append(
                f"<tr><td>{_esc(c.file)}</td><td>{_esc(c.row)}</td><td>{_esc(c.field)}</td>"
                f"<td><code>{_esc(c.value)}</code></td><td>{_esc(c.message)}</td></tr>"
            )
        parts.append("</table>")
    parts.append(
        "<h2>Files</h2><table><tr><th>source</th><th>file</th><th>rows in</th><th>accepted</th><th>quarantined</th><th>warnings</th></tr>"
    )
    for f in report.files:
        parts.append(
            f"<tr><td>{_esc(f.source)}</td><td>{_esc(f.file)}</td><td>{f.rows_in:,}</td><td>{f.accepted:,}</td>"
            f"<td>{f.quarantined:,}</td><td>{f.warnings:,}</td></tr>"
        )
    parts.append("</table>")
    if report.expectations:
        parts.append(
            "<h2>Data-quality expectations (great-expectations)</h2><table><tr><th>table</th><th>expectation</th><th>result</th></tr>"
        )
        for e in report.expectations:
            mark = "passed" if e.get("success") else "FAILED"
            parts.append(
                f"<tr><td>{_esc(e.get('table'))}</td><td>{_esc(e.get('expectation'))}</td><td>{mark}</td></tr>"
            )
        parts.append("</table>")
    if report.fhir is not None:
        parts.extend(_fhir_html(report.fhir))
    for note in report.notes:
        parts.append(f"<p>{_esc(note)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _fhir_html(fhir: dict[str, Any]) -> list[str]:
    """FHIR accounting: every resource emitted, out of scope (counted, never quarantined)
    or quarantined; the out-of-scope resources by type, first code and reason."""
    outcomes = fhir.get("outcomes", {})
    parts = [
        "<h2>FHIR resources</h2><table><tr><th>resources</th><th>loaded</th>"
        "<th>out of scope</th><th>quarantined</th><th>not in cohort</th></tr>",
        f"<tr><td>{fhir.get('resources', 0):,}</td><td>{outcomes.get('emitted', 0):,}</td>"
        f"<td>{outcomes.get('out_of_scope', 0):,}</td><td>{outcomes.get('rejected', 0):,}</td>"
        f"<td>{fhir.get('not_in_cohort', 0):,}</td></tr></table>",
    ]
    rows = fhir.get("out_of_scope") or []
    if rows:
        parts.append(
            "<h3>Out of scope (not needed by the cohort; add a concept-map row to use a code)"
            "</h3><table><tr><th>resource type</th><th>first code</th><th>reason</th>"
            "<th>resources</th></tr>"
        )
        for r in rows[:200]:
            parts.append(
                f"<tr><td>{_esc(r['resource_type'])}</td><td>{_esc(r['code'])}</td>"
                f"<td>{_esc(r['reason'])}</td><td>{r['count']:,}</td></tr>"
            )
        parts.append("</table>")
    return parts
