"""Per-group summary of the analysed patients, straight from ``marts.patient`` (the table
``cart-etl demo`` prints after loading the reference cohort)."""

from __future__ import annotations

import duckdb
import pandas as pd

GROUP_SUMMARY_SQL = """
SELECT CASE WHEN is_toci THEN 'toci' ELSE 'no toci' END AS "group",
       count(*) AS "n",
       median(age_years) AS "median age",
       count(*) FILTER (WHERE max_crs_grade >= 1) AS "CRS",
       count(*) FILTER (WHERE max_crs_grade >= 3) AS "CRS >= 3",
       median(crs_duration_days) AS "median CRS days",
       count(*) FILTER (WHERE response_day28 = 'mrd_neg_cr') AS "MRD- CR",
       count(*) FILTER (WHERE os_event) AS "deaths"
FROM marts.patient WHERE is_included GROUP BY ALL ORDER BY "group" DESC
"""


def group_summary(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """One row per group (toci, then no toci): analysed patients, median age, patients with
    CRS and with CRS grade >= 3, median CRS duration (days), MRD-negative CR at day 28 and
    deaths. The columns are named as printed."""
    return con.execute(GROUP_SUMMARY_SQL).df()
