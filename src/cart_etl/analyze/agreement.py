"""Agreement between the derived ASTCT CRS grade and the physician-recorded grade.

A check the paper does not report: the derived grade (``marts.patient.max_crs_grade``,
ASTCT 2019 from the charted signals) against ``marts.patient_detail.crs_grade_recorded``
for analysed patients with both. Confusion table plus Cohen's weighted κ (linear and
quadratic weights; Cohen 1968) over the grades 0-4.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

from cart_etl.analyze.stats import weighted_kappa

GRADES = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Agreement:
    """Confusion table (rows derived, columns recorded) and agreement statistics."""

    confusion: pd.DataFrame
    n: int
    exact_agreement: int
    kappa_linear: float
    kappa_quadratic: float


def grade_pairs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Analysed patients with both a derived and a recorded grade."""
    return con.execute(
        """
        SELECT p.person_id, p.max_crs_grade AS derived, d.crs_grade_recorded AS recorded
        FROM marts.patient p JOIN marts.patient_detail d USING (person_id)
        WHERE p.is_included AND p.max_crs_grade IS NOT NULL
          AND d.crs_grade_recorded IS NOT NULL
        ORDER BY p.person_id
        """
    ).df()


def agreement(con: duckdb.DuckDBPyConnection) -> Agreement:
    """Confusion table and weighted κ of derived vs recorded grade."""
    pairs = grade_pairs(con)
    confusion = (
        pd.crosstab(pairs["derived"].astype(int), pairs["recorded"].astype(int))
        .reindex(index=list(GRADES), columns=list(GRADES), fill_value=0)
        .rename_axis(index="derived ASTCT", columns="recorded")
    )
    table = confusion.to_numpy().tolist()
    return Agreement(
        confusion=confusion,
        n=len(pairs),
        exact_agreement=int((pairs["derived"] == pairs["recorded"]).sum()),
        kappa_linear=weighted_kappa(table, "linear"),
        kappa_quadratic=weighted_kappa(table, "quadratic"),
    )
