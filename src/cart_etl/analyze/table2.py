"""Table 2 of Zhou et al. 2025: characteristics by tocilizumab group, with two test choices.

Continuous rows: median (min-max); binary and categorical rows: n (%) of the group, as the
paper prints them. Each tested row carries (1) the *as-published* test configured in
``mappings/analysis/table2.yaml`` and (2) the *principled* pre-specified rule of
``stats.principled_categorical`` / Mann-Whitney U; both families are adjusted with
Bonferroni (capped at 1) and Holm, beside the paper's own convention (m x p, uncapped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from cart_etl.analyze import stats
from cart_etl.analyze.cohort import (
    GROUP_NON_TOCI,
    GROUP_TOCI,
    RowSpec,
    analysed_patients,
    load_table2_spec,
)
from cart_etl.analyze.stats import TestResult

COLUMNS = ("total", GROUP_TOCI, GROUP_NON_TOCI)


@dataclass(frozen=True, slots=True)
class Continuous:
    """Median (min-max) of a sample, missing values dropped."""

    n: int
    median: float
    min: float
    max: float


@dataclass(frozen=True, slots=True)
class Count:
    """n of a group with a characteristic; pct over the whole group (the paper's denominator)."""

    n: int
    denominator: int

    @property
    def pct(self) -> float:
        """Percentage of the group, unrounded."""
        return 100.0 * self.n / self.denominator if self.denominator else math.nan


@dataclass
class Table2Row:
    """A computed Table 2 row: summaries per column and the tests."""

    spec: RowSpec
    continuous: dict[str, Continuous] = field(default_factory=dict)
    counts: dict[str, dict[str, Count]] = field(default_factory=dict)  # column -> level -> n
    published: TestResult | None = None
    principled: TestResult | None = None
    adjusted: dict[str, float] = field(default_factory=dict)


def fmt_number(x: float) -> str:
    """A number as the paper prints it: integers bare, else at most two decimals."""
    if math.isnan(x):
        return "NA"
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.2f}".rstrip("0").rstrip(".")


def fmt_median_range(c: Continuous) -> str:
    """``median (min-max)``, e.g. ``36 (8-67)``."""
    return f"{fmt_number(c.median)} ({fmt_number(c.min)}-{fmt_number(c.max)})"


def fmt_count(c: Count) -> str:
    """``n (%)`` with one decimal, e.g. ``8 (47.1)``."""
    return f"{c.n} ({c.pct:.1f})"


def summarise_continuous(values: pd.Series) -> Continuous:
    """Median, minimum and maximum over the non-missing values."""
    v = pd.to_numeric(values, errors="coerce").dropna().astype(float)
    if v.empty:
        return Continuous(0, math.nan, math.nan, math.nan)
    return Continuous(len(v), float(v.median()), float(v.min()), float(v.max()))


def _levels(spec: RowSpec, df: pd.DataFrame) -> dict[str, pd.Series]:
    """Boolean masks of the row's levels (binary: the level and its complement)."""
    col = df[spec.column]
    if spec.kind == "binary":
        hit = col.astype("object") == spec.level
        hit = hit.fillna(False).astype(bool)
        return {"yes": hit, "no": ~hit}
    return {c.id: c.mask(col).fillna(False).astype(bool) for c in spec.categories}


def contingency(spec: RowSpec, df: pd.DataFrame) -> list[list[int]]:
    """Group x level table (rows: toci, non_toci) for a binary or categorical row."""
    masks = _levels(spec, df)
    return [
        [int((mask & (df["group"] == g)).sum()) for mask in masks.values()]
        for g in (GROUP_TOCI, GROUP_NON_TOCI)
    ]


def compute_row(spec: RowSpec, df: pd.DataFrame) -> Table2Row:
    """Summaries and both tests of one row over the analysed patients ``df``."""
    row = Table2Row(spec)
    groups = {
        "total": df,
        GROUP_TOCI: df[df["group"] == GROUP_TOCI],
        GROUP_NON_TOCI: df[df["group"] == GROUP_NON_TOCI],
    }
    if spec.kind == "continuous":
        row.continuous = {k: summarise_continuous(g[spec.column]) for k, g in groups.items()}
        if spec.published_test != "none":
            x = groups[GROUP_TOCI][spec.column].astype(float)
            y = groups[GROUP_NON_TOCI][spec.column].astype(float)
            row.published = stats.run_test(spec.published_test, x=x, y=y)
            row.principled = stats.mann_whitney(x, y)
        return row
    for key, g in groups.items():
        masks = _levels(spec, g)
        row.counts[key] = {lvl: Count(int(m.sum()), len(g)) for lvl, m in masks.items()}
    if spec.published_test != "none":
        table = contingency(spec, df)
        row.published = stats.run_test(spec.published_test, table=table)
        row.principled = stats.principled_categorical(table)
    return row


def _adjust(rows: list[Table2Row]) -> None:
    tested = [r for r in rows if r.published is not None and r.principled is not None]
    pub = [r.published.p for r in tested if r.published is not None]
    pri = [r.principled.p for r in tested if r.principled is not None]
    for name, values in (
        ("published_bonferroni", stats.bonferroni(pub)),
        ("published_holm", stats.holm(pub)),
        ("published_paper_convention", stats.paper_adjusted(pub)),
        ("principled_bonferroni", stats.bonferroni(pri)),
        ("principled_holm", stats.holm(pri)),
    ):
        for r, v in zip(tested, values, strict=True):
            r.adjusted[name] = v


def table2_rows(con: duckdb.DuckDBPyConnection, spec_path: Path | None = None) -> list[Table2Row]:
    """Every Table 2 row computed from ``marts.patient`` (analysed patients)."""
    _, specs = load_table2_spec(spec_path)
    df = analysed_patients(con)
    rows = [compute_row(s, df) for s in specs]
    _adjust(rows)
    return rows


def _test_cells(row: Table2Row) -> dict[str, object]:
    if row.published is None or row.principled is None:
        return {}
    paper = row.adjusted["published_paper_convention"]
    return {
        "published_test": row.published.name,
        "p_published_test": row.published.p,
        "p_bonferroni": row.adjusted["published_bonferroni"],
        "p_holm": row.adjusted["published_holm"],
        "p_paper_convention": paper,
        "paper_convention_invalid": bool(paper > 1.0),
        "principled_test": row.principled.name,
        "p_principled": row.principled.p,
        "p_principled_bonferroni": row.adjusted["principled_bonferroni"],
        "p_principled_holm": row.adjusted["principled_holm"],
        "note": row.principled.note,
    }


def group_sizes(df: pd.DataFrame) -> dict[str, int]:
    """Analysed patients per Table 2 column."""
    return {
        "total": len(df),
        GROUP_TOCI: int((df["group"] == GROUP_TOCI).sum()),
        GROUP_NON_TOCI: int((df["group"] == GROUP_NON_TOCI).sum()),
    }


def table2_frame(rows: list[Table2Row], patients: pd.DataFrame | None = None) -> pd.DataFrame:
    """The display frame: one line per row (categorical rows: a header line + one per level).

    With the analysed ``patients``, ``frame.attrs["n"]`` holds the patients per column.
    """
    lines: list[dict[str, object]] = []
    for row in rows:
        base = {"row_id": row.spec.id, "level": "", "characteristic": row.spec.label}
        if row.spec.kind == "continuous":
            cells = {k: fmt_median_range(row.continuous[k]) for k in COLUMNS}
            lines.append({**base, **cells, **_test_cells(row)})
        elif row.spec.kind == "binary":
            cells = {k: fmt_count(row.counts[k]["yes"]) for k in COLUMNS}
            lines.append({**base, **cells, **_test_cells(row)})
        else:
            lines.append({**base, **dict.fromkeys(COLUMNS, ""), **_test_cells(row)})
            for cat in row.spec.categories:
                cells = {k: fmt_count(row.counts[k][cat.id]) for k in COLUMNS}
                level: dict[str, object] = {
                    "row_id": row.spec.id,
                    "level": cat.id,
                    "characteristic": f"  {cat.label}",
                }
                lines.append(level | cells)
    frame = pd.DataFrame(lines)
    for col in ("p_published_test", "p_bonferroni", "p_holm", "p_paper_convention"):
        if col not in frame:
            frame[col] = np.nan
    frame = frame.fillna({"published_test": "", "principled_test": "", "note": ""})
    if patients is not None:
        frame.attrs["n"] = group_sizes(patients)
    return frame


def table2(con: duckdb.DuckDBPyConnection, spec_path: Path | None = None) -> pd.DataFrame:
    """Table 2 as a DataFrame (columns total / toci / non_toci formatted as in the paper).

    ``frame.attrs["n"]`` holds the analysed patients per column.
    """
    return table2_frame(table2_rows(con, spec_path), analysed_patients(con))
