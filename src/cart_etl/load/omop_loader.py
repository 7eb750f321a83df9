"""Load OMOP CDM v5.4 tables from the staged buckets through the per-table mappers."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from cart_etl.contract import ENTITIES
from cart_etl.load.omop_ddl import DDL_SQL


def create_omop(con: duckdb.DuckDBPyConnection, ddl_path: Path = DDL_SQL) -> None:
    """Drop and recreate the CDM tables (a run rebuilds them inside its transaction)."""
    from cart_etl.load.omop import TABLES
    from cart_etl.load.omop._common import device_exposure_ddl

    for table in TABLES:
        con.execute(f"DROP TABLE IF EXISTS omop.{table}")
    con.execute(ddl_path.read_text(encoding="utf-8"))
    # The field-level CSV lacks DEVICE_EXPOSURE: its DDL comes with the mapper (OHDSI v5.4).
    con.execute(device_exposure_ddl())


def _query(con: duckdb.DuckDBPyConnection, sql: str, params: list[object]) -> pl.DataFrame:
    """A query result as a polars frame (through Arrow, no pandas)."""
    return con.sql(sql, params=params).pl()


def _bucket_frame(con: duckdb.DuckDBPyConnection, table: str, bucket: int) -> pl.DataFrame:
    return _query(
        con, f"SELECT * EXCLUDE (_bucket) FROM staging.{table} WHERE _bucket = ?", [bucket]
    )


def load_omop(
    con: duckdb.DuckDBPyConnection,
    *,
    source_name: str,
    timezone: str,
    buckets: int,
    schemas_dir: Path | None = None,
) -> dict[str, int]:
    """Map each bucket of patients and insert it; return rows written per CDM table."""
    from cart_etl.load.omop import OmopInput, map_all

    create_omop(con, (schemas_dir / "omop_cdm_v54.sql") if schemas_dir else DDL_SQL)
    written: dict[str, int] = {}
    for bucket in range(buckets):
        accepted = {}
        for entity in ENTITIES:
            frame = _bucket_frame(con, entity, bucket)
            # Staged tables carry the study id as the only patient key (no MRN in the store);
            # the mappers key patients by ``patient_key``, so the study id plays that role.
            if entity == "demographics":
                frame = frame.with_columns(patient_key=pl.col("study_id"))
            else:
                frame = frame.rename({"study_id": "patient_key"})
            accepted[entity] = frame
        persons = _query(
            con,
            "SELECT m.study_id AS patient_key, m.person_id, m.study_id FROM staging.person_map m "
            "JOIN (SELECT DISTINCT study_id FROM staging.demographics WHERE _bucket = ?) d "
            "USING (study_id) ORDER BY m.person_id",
            [bucket],
        )

        def mart(name: str, persons: pl.DataFrame = persons) -> pl.DataFrame:
            ids = persons.get_column("person_id").to_list()
            return _query(
                con, f"SELECT * FROM marts.{name} WHERE list_contains(?, person_id)", [ids]
            )

        inp = OmopInput(
            accepted=accepted,
            persons=persons,
            patient=mart("patient"),
            detail=mart("patient_detail"),
            crs_episode=mart("crs_episode"),
            treatment=mart("treatment"),
            source_name=source_name,
            timezone=timezone,
        )
        for table, frame in map_all(inp).items():
            if table == "cdm_source" and bucket > 0:
                continue  # one row describing the whole load
            arrow = frame.to_arrow()  # noqa: F841 - read by DuckDB's replacement scan
            con.execute(f"INSERT INTO omop.{table} SELECT * FROM arrow")
            written[table] = written.get(table, 0) + frame.height
    return written
