"""SQL extractor: a real SQLite copy of the reference export gives the file path's frames."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from cart_etl.errors import (
    CartEtlError,
    ConfigurationError,
    MappingError,
    MissingDependencyError,
    SourceError,
    SourceUnavailableError,
)
from cart_etl.extract.readers.sql import (
    _unavailable,
    extract_sql,
    load_site_export_into_sqlite,
    redact_url,
)
from cart_etl.extract.site.export import extract_site_export
from cart_etl.extract.site.mapper import RULE_UNKNOWN_ITEM
from cart_etl.extract.site.parse import parse_site_mapping
from cart_etl.extract.site.spec import SiteMapping
from tests.extract.conftest import CASES, Extracted, collect, copy_export, count_data_rows

FLOWSHEET = "vitals_flowsheet.csv"


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def sql_extracted(tianjin_sqlite: Path, tianjin_mapping: SiteMapping) -> Extracted:
    """The reference export extracted from its SQLite copy."""
    return collect(extract_sql(_url(tianjin_sqlite), tianjin_mapping))


def _without_origin(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop("source", "file")


def test_01_the_sqlite_copy_holds_every_file_in_order(
    tianjin_sqlite: Path, tianjin_export: Path, tianjin_mapping: SiteMapping
) -> None:
    with sqlite3.connect(tianjin_sqlite) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {Path(name).stem for name in tianjin_mapping.files}
        for name, spec in tianjin_mapping.files.items():
            (count,) = conn.execute(f'SELECT COUNT(*) FROM "{spec.table}"').fetchone()
            assert count == count_data_rows(tianjin_export / name, spec), name
        rows = conn.execute("SELECT * FROM vitals_flowsheet ORDER BY rowid").fetchall()
        # Raw cells: the register copy still holds the names (it is a copy of the export).
        columns = [r[1] for r in conn.execute("PRAGMA table_info(patients)")]
    with (tianjin_export / FLOWSHEET).open(encoding="utf-8-sig", newline="") as fh:
        expected = [tuple(c or None for c in r) for r in list(csv.reader(fh))[1:]]
    assert rows == expected
    assert "姓名" in columns


def test_02_sql_frames_equal_file_frames_except_origin(
    sql_extracted: Extracted, tianjin_extracted: Extracted, tianjin_mapping: SiteMapping
) -> None:
    assert set(sql_extracted.frames) == set(tianjin_extracted.frames)
    for entity, frame in tianjin_extracted.frames.items():
        sql_frame = sql_extracted.frames[entity]
        assert _without_origin(sql_frame).equals(_without_origin(frame)), entity
        assert set(sql_frame["source"]) == {"sql:tianjin_ref"}
    tables = {Path(name).stem for name in tianjin_mapping.files}
    assert {b.frame["file"][0] for b in sql_extracted.batches} == tables
    assert sql_extracted.rejected == tianjin_extracted.rejected == []


def test_03_rejected_rows_match_the_file_path(
    tianjin_export: Path, tianjin_mapping: SiteMapping, tmp_path: Path
) -> None:
    export = copy_export(tianjin_export, tmp_path / "export")
    (export / FLOWSHEET).write_bytes((CASES / "flowsheet_unknown_item.csv").read_bytes())
    database = tmp_path / "case.sqlite"
    load_site_export_into_sqlite(export, tianjin_mapping, database)
    from_files = collect(extract_site_export(export, tianjin_mapping))
    from_sql = collect(extract_sql(_url(database), tianjin_mapping))
    key = [(r.row, r.field, r.value, r.rule_id) for r in from_files.rejected]
    assert key == [(r.row, r.field, r.value, r.rule_id) for r in from_sql.rejected]
    assert {r.rule_id for r in from_sql.rejected} == {RULE_UNKNOWN_ITEM}
    assert {(r.source, r.file) for r in from_sql.rejected} == {
        ("sql:tianjin_ref", "vitals_flowsheet")
    }


def _table_mapping(tmp_path: Path, order_by: list[str] | None = None) -> SiteMapping:
    """A database site: one table of ICANS assessments."""
    spec: dict[str, object] = {
        "patient_key": "mrn",
        "columns": {
            "mrn": {"field": "demographics.mrn"},
            "assessed": {"field": "icans.at"},
            "grade": {"field": "icans.grade"},
        },
    }
    if order_by:
        spec["order_by"] = order_by
    raw = {"site": "db_site", "timezone": "UTC", "tables": {"icans_assessments": spec}}
    return parse_site_mapping(raw, tmp_path / "db_site.yaml")


def _icans_db(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE icans_assessments (id INTEGER PRIMARY KEY, mrn TEXT, assessed TEXT,"
            " grade INTEGER, score REAL)"
        )
        conn.executemany(
            "INSERT INTO icans_assessments VALUES (?, ?, ?, ?, ?)",
            [
                (3, "M1", "2021-01-03", 2, 7.5),
                (1, "M1", "2021-01-01", 0, 10.0),
                (4, "M2", "2021-01-04", "n/a", None),  # SQLite keeps text in an INTEGER column
                (2, "M2", "", 1, None),
            ],
        )
    return path


def test_04_rows_are_numbered_in_primary_key_order_and_values_cast_to_text(tmp_path: Path) -> None:
    database = _icans_db(tmp_path / "db.sqlite")
    extracted = collect(extract_sql(_url(database), _table_mapping(tmp_path)))
    icans = extracted.frames["icans"]
    assert icans.select("source", "file", "row", "patient_key", "at", "grade").rows() == [
        ("sql:db_site", "icans_assessments", "1", "M1", "2021-01-01", "0"),
        ("sql:db_site", "icans_assessments", "2", "M2", None, "1"),  # '' is missing
        ("sql:db_site", "icans_assessments", "3", "M1", "2021-01-03", "2"),
        ("sql:db_site", "icans_assessments", "4", "M2", "2021-01-04", "n/a"),
    ]
    by_date = collect(extract_sql(_url(database), _table_mapping(tmp_path, ["assessed"])))
    assert by_date.frames["icans"]["at"].to_list() == [
        None,
        "2021-01-01",
        "2021-01-03",
        "2021-01-04",
    ]


def test_05_missing_table_and_column_are_reported_before_reading(
    tianjin_sqlite: Path, tianjin_mapping: SiteMapping, tmp_path: Path
) -> None:
    database = tmp_path / "partial.sqlite"
    database.write_bytes(tianjin_sqlite.read_bytes())
    with sqlite3.connect(database) as conn:
        conn.execute("DROP TABLE icans")
    with pytest.raises(SourceError) as err:
        extract_sql(_url(database), tianjin_mapping)
    text = str(err.value)
    assert "no table 'icans'" in text
    assert "files.icans.csv" in text
    assert "Tables found:" in text
    with sqlite3.connect(database) as conn:
        conn.execute('CREATE TABLE icans ("住院号" TEXT, "评估时间" TEXT, "ICE评分" TEXT)')
    with pytest.raises(MappingError, match=r"table 'icans': column\(s\) 'ICANS分级'"):
        extract_sql(_url(database), tianjin_mapping)


def test_06_unreachable_database_is_retriable_and_never_shows_the_password(
    tmp_path: Path, tianjin_mapping: SiteMapping
) -> None:
    with pytest.raises(SourceUnavailableError, match="unable to open database file"):
        extract_sql(_url(tmp_path), tianjin_mapping)  # a directory: SQLite cannot open it
    url = "postgresql://etl:s3cret@127.0.0.1:1/his"
    error = _unavailable(
        OperationalError("connect", {}, Exception("auth failed for s3cret")),
        make_url(url),
        redact_url(url),
    )
    assert isinstance(error, SourceUnavailableError)
    assert "s3cret" not in str(error)
    assert "etl:***@127.0.0.1:1/his" in str(error)
    with pytest.raises(CartEtlError) as err:  # no driver here, or no server: never the password
        extract_sql(url, tianjin_mapping)
    assert isinstance(err.value, MissingDependencyError | SourceUnavailableError)
    assert "s3cret" not in str(err.value)


def test_07_bad_urls_and_missing_files_are_clear(
    tmp_path: Path, tianjin_mapping: SiteMapping
) -> None:
    missing = tmp_path / "nope.sqlite"
    with pytest.raises(SourceError, match="does not exist"):
        extract_sql(_url(missing), tianjin_mapping)
    assert not missing.exists()  # connecting would have created an empty database
    with pytest.raises(ConfigurationError, match="is not a database URL"):
        extract_sql("not a url", tianjin_mapping)
    with pytest.raises(ConfigurationError, match="no dialect 'nosuch'"):
        extract_sql("nosuch://u:pw@host/db", tianjin_mapping)
    assert redact_url("mysql+pymysql://u:pa:ss@h/db") == "mysql+pymysql://u:***@h/db"


def test_08_small_chunks_give_the_same_frames(
    tianjin_sqlite: Path, tianjin_mapping: SiteMapping, sql_extracted: Extracted
) -> None:
    small = collect(extract_sql(_url(tianjin_sqlite), tianjin_mapping, chunk_rows=1000))
    assert all(b.frame.height <= 1000 for b in small.batches)
    for entity, frame in sql_extracted.frames.items():
        assert small.frames[entity].equals(frame), entity
