"""Post-load great-expectations suite on the marts (pandas batches read from DuckDB).

GX runs on pandas batches, not on its SQL datasource (GX 1.x's SQL path fails on DuckDB with
SQLAlchemy 2.x). The expectations restate the mart contract (schemas/marts.sql) in GX terms.
"""

from __future__ import annotations

from typing import Any

import duckdb

from cart_etl.validate.expectations import validate_batches

POSTLOAD_SUITES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "patient": [
        ("ExpectColumnValuesToBeUnique", {"column": "person_id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "study_id"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "is_included"}),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "max_crs_grade", "min_value": 0, "max_value": 4},
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "max_icans_grade", "min_value": 0, "max_value": 5},
        ),
        (
            "ExpectColumnValuesToBeBetween",
            {"column": "crs_onset_day", "min_value": 0, "max_value": 14},
        ),
        ("ExpectColumnValuesToBeBetween", {"column": "crs_duration_days", "min_value": 0}),
        ("ExpectColumnValuesToBeBetween", {"column": "os_days", "min_value": 0}),
        ("ExpectColumnValuesToBeBetween", {"column": "steroid_mp_equiv_mg", "min_value": 0}),
        (
            "ExpectColumnValuesToBeInSet",
            {"column": "response_day28", "value_set": ["mrd_neg_cr", "mrd_pos_cr", "pr", "nr"]},
        ),
        ("ExpectColumnValuesToBeInSet", {"column": "sex", "value_set": ["M", "F"]}),
    ],
    "crs_episode": [
        ("ExpectColumnValuesToBeBetween", {"column": "max_grade", "min_value": 1, "max_value": 4}),
        ("ExpectColumnValuesToBeBetween", {"column": "duration_hours", "min_value": 0}),
    ],
    "treatment": [
        ("ExpectColumnValuesToNotBeNull", {"column": "person_id"}),
        ("ExpectColumnValuesToBeBetween", {"column": "dose", "min_value": 0}),
    ],
}


def run_postload_suite(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Validate the marts with GX; one result dict per expectation (table, expectation, ...)."""
    frames = {}
    for table, specs in POSTLOAD_SUITES.items():
        cols = sorted({kw["column"] for _, kw in specs})
        frames[table] = con.execute(f"SELECT {', '.join(cols)} FROM marts.{table}").df()
    return validate_batches(POSTLOAD_SUITES, frames, "marts")
