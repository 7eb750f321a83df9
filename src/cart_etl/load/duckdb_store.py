"""The DuckDB analytic store: schemas, run log and quarantine."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson

from cart_etl.errors import FailureCase, StoreError, StoreLockedError

# staging: validated, staged and derived frames per bucket (study id as the patient key);
# omop: CDM v5.4; marts: analyst tables; etl: run log, quarantine and warnings.
SCHEMAS: tuple[str, ...] = ("staging", "omop", "marts", "etl")

# Case tables share one shape: etl.quarantine (rows refused) and etl.warnings (data-quality
# warnings on accepted rows, e.g. a recovered defect).
CASE_TABLES: tuple[str, ...] = ("quarantine", "warnings")
_CASE_COLUMNS = """
        run_id    VARCHAR NOT NULL,
        source    VARCHAR NOT NULL,
        file      VARCHAR NOT NULL,
        row_ref   VARCHAR NOT NULL,
        field     VARCHAR,
        value     VARCHAR,
        rule_id   VARCHAR NOT NULL,
        message   VARCHAR NOT NULL
"""

ETL_DDL: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS etl.runs (
        run_id          VARCHAR PRIMARY KEY,
        started_at      TIMESTAMPTZ NOT NULL,
        finished_at     TIMESTAMPTZ,
        command         VARCHAR NOT NULL,
        input_checksums JSON,
        row_counts      JSON,
        status          VARCHAR NOT NULL CHECK (status IN ('running', 'succeeded', 'failed',
                                               'skipped')),
        message         VARCHAR
    )
    """,
    *(f"CREATE TABLE IF NOT EXISTS etl.{t} ({_CASE_COLUMNS})" for t in CASE_TABLES),
)


def connect(path: Path | str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (and create, unless read-only) a store file with every schema and etl table.

    Args:
        path: the ``.duckdb`` file; ``":memory:"`` for tests.
        read_only: open without taking the writer lock (analysts, reports).

    Raises:
        StoreLockedError: another process holds the store for writing.
        StoreError: the file is not a DuckDB database or cannot be created.
    """
    target = str(path)
    if target != ":memory:":
        if read_only and not Path(target).exists():
            raise StoreError(
                f"Store {target} does not exist.", fix="run `cart-etl run` first to create it."
            )
        if not read_only:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(target, read_only=read_only)
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            raise StoreLockedError(
                f"Store {target} is in use by another process ({text.splitlines()[0]}).",
                fix="wait for the other run to finish, or use --store with another file.",
            ) from exc
        raise StoreError(f"Cannot open store {target}: {text}", fix="check the path.") from exc
    except duckdb.Error as exc:
        raise StoreError(
            f"{target} is not a readable DuckDB store: {exc}",
            fix="point --store at a .duckdb file written by cart-etl, or a new path.",
        ) from exc
    # Instants are stored as TIMESTAMPTZ and exchanged with polars as UTC; the session zone
    # only affects display and Arrow export (DuckDB would otherwise use the machine's zone).
    con.execute("SET TimeZone = 'UTC'")
    if not read_only:
        init_store(con)
    return con


def init_store(con: duckdb.DuckDBPyConnection) -> None:
    """Create the schemas and the etl tables if missing (idempotent)."""
    for schema in SCHEMAS:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for ddl in ETL_DDL:
        con.execute(ddl)


def file_checksum(path: Path, *, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks so big exports stay out of memory."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Run:
    """Handle of one row of ``etl.runs``."""

    run_id: str
    command: str


def start_run(
    con: duckdb.DuckDBPyConnection, command: str, input_checksums: Mapping[str, str]
) -> Run:
    """Insert a ``running`` row in ``etl.runs`` and return its handle."""
    run = Run(run_id=uuid.uuid4().hex, command=command)
    con.execute(
        "INSERT INTO etl.runs (run_id, started_at, command, input_checksums, status) "
        "VALUES (?, ?, ?, ?, 'running')",
        [run.run_id, datetime.now(UTC), command, orjson.dumps(dict(input_checksums)).decode()],
    )
    return run


def finish_run(
    con: duckdb.DuckDBPyConnection,
    run: Run,
    *,
    status: str,
    row_counts: Mapping[str, int] | None = None,
    message: str | None = None,
) -> None:
    """Close a run row with its status, row counts and message."""
    con.execute(
        "UPDATE etl.runs SET finished_at = ?, status = ?, row_counts = ?, message = ? "
        "WHERE run_id = ?",
        [
            datetime.now(UTC),
            status,
            orjson.dumps(dict(row_counts or {})).decode(),
            message,
            run.run_id,
        ],
    )


def _append_cases(
    con: duckdb.DuckDBPyConnection, table: str, run: Run, cases: Iterable[FailureCase]
) -> int:
    import pyarrow as pa

    rows = [(c.source, c.file, c.row, c.field, c.value, c.rule_id, c.message) for c in cases]
    if not rows:
        return 0
    names = ["source", "file", "row_ref", "field", "value", "rule_id", "message"]
    batch = pa.table(  # noqa: F841 - read by DuckDB's replacement scan; executemany is slow
        {n: [r[i] for r in rows] for i, n in enumerate(names)}
    )
    con.execute(f"INSERT INTO etl.{table} SELECT ?, * FROM batch", [run.run_id])
    return len(rows)


def quarantine(con: duckdb.DuckDBPyConnection, run: Run, cases: Iterable[FailureCase]) -> int:
    """Append quarantined-row cases to ``etl.quarantine``; return how many were written."""
    return _append_cases(con, "quarantine", run, cases)


def record_warnings(con: duckdb.DuckDBPyConnection, run: Run, cases: Iterable[FailureCase]) -> int:
    """Append data-quality warnings (accepted rows, recovered defects) to ``etl.warnings``."""
    return _append_cases(con, "warnings", run, cases)
