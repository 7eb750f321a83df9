"""Analysis marts (``schemas/marts.sql``): built in SQL from the staged derivations, checked."""

from __future__ import annotations

from pathlib import Path

import duckdb

from cart_etl.config import Settings

# Marts derived per patient bucket (staged as ``staging.d_<mart>``), in the order they are
# built, each with the ORDER BY that makes its storage order deterministic.
DERIVED_MARTS: dict[str, str] = {
    "patient": "m.person_id",
    "patient_detail": "m.person_id",
    "crs_episode": "m.person_id, d.episode_number",
    "treatment": "m.person_id, d.drug, d.start_at, d.source_file, d.source_row",
    "lab_timeseries": "m.person_id, d.category, d.item, d.measured_at",
}
MART_TABLES: tuple[str, ...] = (*DERIVED_MARTS, "consort")


def marts_ddl(schemas_dir: Path | None = None) -> str:
    """The mart DDL (the analysts' contract) as written in ``schemas/marts.sql``."""
    return ((schemas_dir or Settings().schemas_dir) / "marts.sql").read_text(encoding="utf-8")


def create_marts(con: duckdb.DuckDBPyConnection, schemas_dir: Path | None = None) -> None:
    """Drop and recreate every mart table (a run rebuilds the marts inside its transaction)."""
    for table in MART_TABLES:
        con.execute(f"DROP TABLE IF EXISTS marts.{table}")
    con.execute(marts_ddl(schemas_dir))


def _insert_with_person(con: duckdb.DuckDBPyConnection, mart: str) -> None:
    """INSERT ``staging.d_<mart>`` into the mart, adding person_id, in the mart's column order."""
    cols = [r[0] for r in con.execute(f"DESCRIBE marts.{mart}").fetchall()]
    select = ", ".join("m.person_id" if c == "person_id" else f"d.{c}" for c in cols)
    con.execute(
        f"INSERT INTO marts.{mart} SELECT {select} FROM staging.d_{mart} d "
        f"JOIN staging.person_map m USING (study_id) ORDER BY {DERIVED_MARTS[mart]}"
    )


def build_marts(con: duckdb.DuckDBPyConnection, schemas_dir: Path | None = None) -> None:
    """Fill the marts from ``staging.d_<mart>`` (derived per bucket) and ``staging.person_map``."""
    create_marts(con, schemas_dir)
    for mart in DERIVED_MARTS:
        _insert_with_person(con, mart)
    # CONSORT boxes (paper Figure 1), in flow order, from the patient mart itself.
    con.execute(
        """
        INSERT INTO marts.consort
        SELECT row_number() OVER (ORDER BY ord)::INTEGER, box, patients::INTEGER FROM (
            SELECT 1 AS ord, 'screened' AS box, count(*) AS patients FROM marts.patient
            UNION ALL SELECT 2, 'excluded:not_infused', count(*) FILTER (WHERE NOT is_infused)
                FROM marts.patient
            UNION ALL SELECT 3, 'infused', count(*) FILTER (WHERE is_infused) FROM marts.patient
            UNION ALL SELECT 4, 'excluded:followup_lt_28d',
                count(*) FILTER (WHERE exclusion_reason = 'followup_lt_28d') FROM marts.patient
            UNION ALL SELECT 5, 'excluded:data_lost',
                count(*) FILTER (WHERE exclusion_reason = 'data_lost') FROM marts.patient
            UNION ALL SELECT 6, 'analysed', count(*) FILTER (WHERE is_included) FROM marts.patient
            UNION ALL SELECT 7, 'analysed:toci',
                count(*) FILTER (WHERE is_included AND is_toci) FROM marts.patient
            UNION ALL SELECT 8, 'analysed:no_toci',
                count(*) FILTER (WHERE is_included AND NOT is_toci) FROM marts.patient
        )
        """
    )


# Each invariant: (name, grain/rule it protects, SQL counting the violating rows).
INVARIANTS: tuple[tuple[str, str, str], ...] = (
    (
        "patient.one_row_per_screened",
        "marts.patient has one row per accepted register row",
        "SELECT abs((SELECT count(*) FROM marts.patient) - (SELECT count(DISTINCT study_id) "
        "FROM staging.demographics))",
    ),
    (
        "patient.included_iff_no_exclusion",
        "is_included exactly when exclusion_reason is NULL; included patients were infused",
        "SELECT count(*) FROM marts.patient WHERE is_included <> (exclusion_reason IS NULL) "
        "OR (is_included AND NOT is_infused)",
    ),
    (
        "patient.crs_grade_range",
        "max_crs_grade in 0..4 (ASTCT; grade 5 = death, not derived)",
        "SELECT count(*) FROM marts.patient WHERE max_crs_grade NOT BETWEEN 0 AND 4",
    ),
    (
        "patient.followup_non_negative",
        "os_days and pfs_days >= 0 and pfs_days <= os_days",
        "SELECT count(*) FROM marts.patient WHERE os_days < 0 OR pfs_days < 0 "
        "OR pfs_days > os_days",
    ),
    (
        "crs_episode.non_overlapping",
        "episodes of one patient do not overlap and durations are >= 0",
        "SELECT count(*) FROM (SELECT onset_at, end_at, lag(end_at) OVER "
        "(PARTITION BY person_id ORDER BY episode_number) AS prev_end FROM marts.crs_episode) "
        "WHERE onset_at <= prev_end OR end_at < onset_at",
    ),
    (
        "crs_episode.matches_patient",
        "the patient's max CRS grade equals the max over its CRS episodes",
        "SELECT count(*) FROM marts.patient p JOIN (SELECT person_id, max(max_grade) AS g "
        "FROM marts.crs_episode WHERE is_crs GROUP BY person_id) e USING (person_id) "
        "WHERE p.max_crs_grade IS NOT NULL AND p.max_crs_grade <> e.g",
    ),
    (
        "treatment.toci_matches_patient",
        "toci_doses equals the tocilizumab rows of marts.treatment",
        "SELECT count(*) FROM marts.patient p LEFT JOIN (SELECT person_id, count(*) AS n FROM "
        "marts.treatment WHERE drug = 'tocilizumab' GROUP BY person_id) t USING (person_id) "
        "WHERE p.is_infused AND p.toci_doses <> coalesce(t.n, 0)",
    ),
    (
        "treatment.dose_non_negative",
        "normalised doses are >= 0",
        "SELECT count(*) FROM marts.treatment WHERE dose < 0",
    ),
    (
        "consort.adds_up",
        "screened = infused + not infused; infused = exclusions + analysed; analysed = groups",
        "SELECT (SELECT count(*) FROM marts.patient WHERE is_infused) <> "
        "(SELECT count(*) FROM marts.patient WHERE is_included OR exclusion_reason IN "
        "('followup_lt_28d', 'data_lost'))",
    ),
)


def check_invariants(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int]]:
    """Run every mart invariant; return (name, rule, violations) for those that fail."""
    failed = []
    for name, rule, sql in INVARIANTS:
        rows = con.execute(sql).fetchall()
        count = int(rows[0][0]) if rows and rows[0][0] is not None else 0
        if count:
            failed.append((name, rule, count))
    return failed
