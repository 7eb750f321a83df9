"""The DuckDB store: schemas, run log, quarantine, locking and bad files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cart_etl.errors import FailureCase, StoreError, StoreLockedError
from cart_etl.load import duckdb_store as store


def test_01_connect_creates_schemas_and_etl_tables(tmp_path: Path):
    con = store.connect(tmp_path / "s.duckdb")
    schemas = {
        r[0] for r in con.execute("SELECT schema_name FROM information_schema.schemata").fetchall()
    }
    assert set(store.SCHEMAS) <= schemas
    tables = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='etl'"
        ).fetchall()
    }
    assert tables == {"runs", "quarantine", "warnings", "store_info"}
    # etl.warnings (data-quality warnings of accepted rows) has the columns of etl.quarantine.
    columns = (
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_schema='etl' AND table_name=? ORDER BY ordinal_position"
    )
    quarantine_cols = con.execute(columns, ["quarantine"]).fetchall()
    assert quarantine_cols
    assert con.execute(columns, ["warnings"]).fetchall() == quarantine_cols
    store.init_store(con)  # idempotent
    con.close()


def test_02_run_log_and_quarantine_round_trip(tmp_path: Path):
    con = store.connect(tmp_path / "s.duckdb")
    run = store.start_run(con, "cart-etl run --site x", {"a.csv": "abc"})
    case = FailureCase(
        "site",
        "a.csv",
        "12",
        "结果",
        "371",
        "vital.temp.range",
        "temperature 371 Cel is impossible; fix the decimal point",
    )
    assert store.quarantine(con, run, [case]) == 1
    store.finish_run(con, run, status="succeeded", row_counts={"a.csv": 10})
    status, counts, checks = con.execute(
        "SELECT status, row_counts, input_checksums FROM etl.runs"
    ).fetchone()
    assert status == "succeeded" and '"a.csv":10' in counts.replace(" ", "") and "abc" in checks
    assert con.execute("SELECT rule_id, row_ref FROM etl.quarantine").fetchall() == [
        ("vital.temp.range", "12")
    ]
    con.close()


def test_03_second_writer_process_is_refused_with_a_clear_error(tmp_path: Path):
    path = tmp_path / "s.duckdb"
    con = store.connect(path)
    code = f"from cart_etl.load.duckdb_store import connect\nconnect({str(path)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "StoreLockedError" in proc.stderr
    con.close()
    with pytest.raises(StoreLockedError):
        raise StoreLockedError("x")


def test_04_not_a_duckdb_file(tmp_path: Path):
    bad = tmp_path / "notes.duckdb"
    bad.write_text("hello")
    with pytest.raises(StoreError, match="not a DuckDB database"):
        store.connect(bad)


def test_05_read_only_missing_store_says_how_to_create_it(tmp_path: Path):
    with pytest.raises(StoreError, match="cart-etl run"):
        store.connect(tmp_path / "missing.duckdb", read_only=True)


def test_06_file_checksum_is_sha256(tmp_path: Path):
    f = tmp_path / "x.txt"
    f.write_bytes(b"abc")
    assert (
        store.file_checksum(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
