"""The committed OMOP DDL is the generator's output and creates every table in DuckDB."""

from __future__ import annotations

import csv

import duckdb

from cart_etl.load.omop_ddl import DDL_SQL, FIELDS_CSV, duckdb_type, generate_ddl


def test_01_committed_ddl_is_regenerated_exactly():
    assert DDL_SQL.read_text(encoding="utf-8") == generate_ddl()


def test_02_ddl_creates_the_13_tables_with_every_field_in_cdm_order():
    con = duckdb.connect(":memory:")
    con.execute(DDL_SQL.read_text(encoding="utf-8"))
    with FIELDS_CSV.open(encoding="utf-8", newline="") as fh:
        spec = list(csv.DictReader(fh))
    tables = sorted({r["cdmTableName"] for r in spec})
    assert len(tables) == 13
    for table in tables:
        got = [
            r[0]
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema='omop' AND table_name=? ORDER BY ordinal_position",
                [table],
            ).fetchall()
        ]
        assert got == [r["cdmFieldName"] for r in spec if r["cdmTableName"] == table]


def test_03_required_fields_and_primary_keys_are_enforced():
    con = duckdb.connect(":memory:")
    con.execute(DDL_SQL.read_text(encoding="utf-8"))
    con.execute(
        "INSERT INTO omop.person (person_id, gender_concept_id, year_of_birth, race_concept_id, ethnicity_concept_id) VALUES (1, 8532, 1985, 0, 0)"
    )
    for bad in (
        "INSERT INTO omop.person (person_id, gender_concept_id, year_of_birth, race_concept_id, ethnicity_concept_id) VALUES (1, 8507, 1990, 0, 0)",
        "INSERT INTO omop.person (person_id, gender_concept_id, race_concept_id, ethnicity_concept_id) VALUES (2, 8507, 0, 0)",
    ):
        try:
            con.execute(bad)
        except duckdb.ConstraintException:
            continue
        raise AssertionError(f"accepted: {bad}")


def test_04_types():
    assert duckdb_type("integer", "person_id") == "BIGINT"
    assert duckdb_type("Integer", "year_of_birth") == "INTEGER"
    assert duckdb_type("varchar(MAX)", "note_text") == "VARCHAR"
    assert duckdb_type("datetime", "x") == "TIMESTAMP"
    assert duckdb_type("float", "value_as_number") == "DOUBLE"
