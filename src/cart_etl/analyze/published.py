"""Published vs reproduced: every figure of ``reference/paper/published_values.yaml`` beside
the value reproduced from the marts, the difference and a status.

The yaml is read here only to put the published number beside the reproduced one; every
reproduced value comes from the analysis functions (SQL over ``marts.*``) through
``reproduced.reproduced_values``; ``inconsistencies`` explains the known inconsistencies.

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

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import yaml

from cart_etl.analyze.reproduced import Reproduced, reproduced_values
from cart_etl.analyze.results import Results
from cart_etl.analyze.table2 import Continuous, Count, fmt_median_range, fmt_number
from cart_etl.config import PROJECT_ROOT

PUBLISHED_PATH = PROJECT_ROOT / "reference" / "paper" / "published_values.yaml"
STATUSES = ("exact", "within tolerance", "differs", "not reproducible")
P_TOLERANCE = 0.01
P_ADJ_TOLERANCE = 0.1
PCT_TOLERANCE = 0.1
NUMBER_TOLERANCE = 0.0051
MEDIAN_RANGE = re.compile(r"\s*([\d.]+)\s*\(([\d.]+)\s*-\s*([\d.]+)\)\s*")
RANGE = re.compile(r"\s*(\d+)\s*-\s*(\d+)\s*")


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
    source: Results | duckdb.DuckDBPyConnection, published: dict[str, Any] | None = None
) -> list[Comparison]:
    """Every published figure with the reproduced value, difference and status."""
    pub = published if published is not None else load_published()
    rep = reproduced_values(source)
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
