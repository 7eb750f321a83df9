"""Read the analysis marts (SQL only) into pandas frames for the statistics.

The analysed population is ``marts.patient.is_included`` (the paper's 45 patients: infused,
followed >= 28 days, CRS monitoring and day-28 response available); the grouping variable is
``is_toci`` (received tocilizumab).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import yaml

from cart_etl.config import Settings
from cart_etl.errors import StoreError

MART_TABLES = ("patient", "patient_detail", "crs_episode", "treatment", "lab_timeseries", "consort")
GROUP_TOCI = "toci"
GROUP_NON_TOCI = "non_toci"
CYTOKINES: tuple[str, ...] = ("il6", "il10", "sil2r", "tnf_alpha", "ifn_gamma")
CYTOKINE_LABELS: dict[str, str] = {
    "il6": "IL-6",
    "il10": "IL-10",
    "sil2r": "sIL-2R",
    "tnf_alpha": "TNF-α",
    "ifn_gamma": "IFN-γ",
}


def require_marts(con: duckdb.DuckDBPyConnection) -> None:
    """Fail with the fix when the store has no filled marts (e.g. `cart-etl run` not done)."""
    found = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'marts'"
        ).fetchall()
    }
    missing = [t for t in MART_TABLES if t not in found]
    if missing:
        raise StoreError(
            f"The store has no marts.{', marts.'.join(missing)}.",
            fix="run `cart-etl run` to fill the store before `cart-etl report`.",
        )
    if con.execute("SELECT count(*) FROM marts.patient WHERE is_included").fetchone() == (0,):
        raise StoreError(
            "marts.patient has no analysed patient (is_included).",
            fix="check the run log (etl.runs) of the last `cart-etl run`.",
        )


def analysed_patients(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """``marts.patient`` rows of the analysed population, with ``group`` = toci | non_toci."""
    return con.execute(
        f"""
        SELECT *, CASE WHEN is_toci THEN '{GROUP_TOCI}' ELSE '{GROUP_NON_TOCI}' END AS "group"
        FROM marts.patient WHERE is_included ORDER BY person_id
        """
    ).df()


def analysed_details(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """``marts.patient_detail`` of the analysed population, with group and CRS grade."""
    return con.execute(
        f"""
        SELECT d.* EXCLUDE (infusion_at, first_toci_at), p.max_crs_grade, p.is_toci,
               CASE WHEN p.is_toci THEN '{GROUP_TOCI}' ELSE '{GROUP_NON_TOCI}' END AS "group"
        FROM marts.patient_detail d JOIN marts.patient p USING (person_id)
        WHERE p.is_included ORDER BY person_id
        """
    ).df()


def consort_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """``marts.consort`` as {box: patients}, in flow order."""
    rows = con.execute("SELECT box, patients FROM marts.consort ORDER BY step").fetchall()
    return {str(box): int(n) for box, n in rows}


def enrolment_months(con: duckdb.DuckDBPyConnection) -> tuple[str, str] | None:
    """First and last month (YYYY-MM) of a CAR-T infusion among screened patients."""
    row = con.execute(
        "SELECT strftime(min(infusion_date), '%Y-%m'), strftime(max(infusion_date), '%Y-%m') "
        "FROM marts.patient_detail"
    ).fetchone()
    return None if row is None or row[0] is None else (str(row[0]), str(row[1]))


def cytokine_series(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Cytokine measurements of analysed tocilizumab patients around their first dose.

    Columns: person_id, study_id, item, hours_from_first_toci, value, unit.
    """
    items = ", ".join(f"'{c}'" for c in CYTOKINES)
    return con.execute(
        f"""
        SELECT l.person_id, l.study_id, l.item, l.hours_from_first_toci, l.value, l.unit
        FROM marts.lab_timeseries l JOIN marts.patient p USING (person_id)
        WHERE p.is_included AND p.is_toci AND l.item IN ({items})
          AND l.hours_from_first_toci IS NOT NULL
        ORDER BY l.person_id, l.item, l.measured_at
        """
    ).df()


def toci_dose_intervals_h(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Hours between consecutive tocilizumab doses of analysed patients (one row per gap)."""
    return con.execute(
        """
        SELECT person_id, dose_number,
               (epoch(start_at) - epoch(lag(start_at) OVER w)) / 3600.0 AS hours_since_previous
        FROM marts.treatment JOIN marts.patient p USING (person_id)
        WHERE drug = 'tocilizumab' AND p.is_included
        WINDOW w AS (PARTITION BY person_id ORDER BY start_at)
        QUALIFY dose_number > 1
        """
    ).df()


def toci_doses(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Tocilizumab administrations of analysed patients (dose mg, label-limit flag)."""
    return con.execute(
        """
        SELECT t.person_id, t.dose_number, t.dose, t.dose_mg_per_kg, t.exceeds_label_limit
        FROM marts.treatment t JOIN marts.patient p USING (person_id)
        WHERE t.drug = 'tocilizumab' AND p.is_included ORDER BY t.person_id, t.dose_number
        """
    ).df()


def crs_episodes(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """CRS episodes (is_crs) of analysed patients, with group."""
    return con.execute(
        f"""
        SELECT e.*, CASE WHEN p.is_toci THEN '{GROUP_TOCI}' ELSE '{GROUP_NON_TOCI}' END AS "group"
        FROM marts.crs_episode e JOIN marts.patient p USING (person_id)
        WHERE p.is_included AND e.is_crs ORDER BY e.person_id, e.episode_number
        """
    ).df()


@dataclass(frozen=True)
class Category:
    """One level of a categorical Table 2 row: explicit values or a numeric interval."""

    id: str
    label: str
    values: tuple[float, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True

    def mask(self, series: pd.Series) -> pd.Series:
        """Which values fall in this category (missing values never do)."""
        s = pd.to_numeric(series, errors="coerce")
        if self.values is not None:
            return s.isin(self.values)
        keep = s.notna()
        if self.min is not None:
            keep &= (s >= self.min) if self.min_inclusive else (s > self.min)
        if self.max is not None:
            keep &= (s <= self.max) if self.max_inclusive else (s < self.max)
        return keep


@dataclass(frozen=True)
class RowSpec:
    """One Table 2 row as configured in ``mappings/analysis/table2.yaml``."""

    id: str
    label: str
    kind: str  # continuous | binary | categorical
    column: str
    published_test: str  # a stats.TEST_NAMES id, or "none"
    level: Any = None
    categories: tuple[Category, ...] = ()


def table2_spec_path(settings: Settings | None = None) -> Path:
    """``<mappings>/analysis/table2.yaml`` (``CART_ETL_MAPPINGS`` overrides the folder)."""
    return (settings or Settings()).mappings_dir / "analysis" / "table2.yaml"


def load_table2_spec(path: Path | None = None) -> tuple[dict[str, str], list[RowSpec]]:
    """Group labels and the row specifications of Table 2."""
    data = yaml.safe_load((path or table2_spec_path()).read_text(encoding="utf-8"))
    rows = []
    for raw in data["rows"]:
        cats = tuple(
            Category(
                id=str(c["id"]),
                label=str(c["label"]),
                values=tuple(c["values"]) if "values" in c else None,
                min=c.get("min"),
                max=c.get("max"),
                min_inclusive=c.get("min_inclusive", True),
                max_inclusive=c.get("max_inclusive", True),
            )
            for c in raw.get("categories", [])
        )
        rows.append(
            RowSpec(
                id=raw["id"],
                label=raw["label"],
                kind=raw["kind"],
                column=raw["column"],
                published_test=raw.get("published_test", "none"),
                level=raw.get("level"),
                categories=cats,
            )
        )
    return dict(data["groups"]), rows
