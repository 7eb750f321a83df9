"""The DuckDB analytic store: schemas, run log and quarantine."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson

from cart_etl.errors import (
    FailureCase,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreVersionError,
)

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


# The layout of the etl schema, recorded in etl.store_info. Bump it with a migration in
# _MIGRATIONS whenever a table of the store changes. 0 = a store written before versioning.
STORE_SCHEMA_VERSION = 1
STORE_INFO_DDL = """
    CREATE TABLE IF NOT EXISTS etl.store_info (
        schema_version     INTEGER NOT NULL,
        created_by_version VARCHAR,
        created_at         TIMESTAMPTZ,
        upgraded_by_version VARCHAR,
        upgraded_at        TIMESTAMPTZ
    )
"""
# Columns of etl.runs added after the first layout (a pre-versioning store may lack them).
_RUNS_LATER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("finished_at", "TIMESTAMPTZ"),
    ("input_checksums", "JSON"),
    ("row_counts", "JSON"),
    ("message", "VARCHAR"),
)
# The DuckDB main-file header: 8 bytes of checksum, then the magic bytes.
DUCKDB_MAGIC = b"DUCK"
_MAGIC_OFFSET = 8


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cart_etl")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_store_path(
    path: Path | str, *, read_only: bool = False, inputs: Iterable[Path | str] = ()
) -> Path:
    """Refuse a store path that would lose data or cannot hold a store; return it resolved.

    An existing file must be a DuckDB database (DuckDB itself opens any other file, e.g. a
    ``.csv``, as a throw-away in-memory database); the store must not be, or lie inside, an
    input of the run; its folder is created if missing (writers), unless a part of that
    folder is a regular file.

    Raises:
        StoreError: with the reason and the fix.
    """
    target = Path(path).expanduser().absolute()
    for given in inputs:
        text = str(given)
        if "://" in text:
            if not text.startswith("sqlite:///"):
                continue
            text = text.removeprefix("sqlite:///")
        location = Path(text).expanduser().absolute()
        if _inside(target.resolve(), location.resolve()):
            raise StoreError(
                f"Store {target} is {'the input' if target == location else 'inside the input'} "
                f"{location}: the run would write into the delivery it reads.",
                fix="point --store at a .duckdb file outside the export folder.",
            )
    if target.is_dir():
        raise StoreError(
            f"Store {target} is a folder, not a DuckDB file.",
            fix=f"give a file name, e.g. --store {target / 'cart_etl.duckdb'}.",
        )
    if target.exists():
        try:
            with target.open("rb") as fh:
                head = fh.read(_MAGIC_OFFSET + len(DUCKDB_MAGIC))
        except OSError as exc:
            raise StoreError(
                f"Cannot read store {target}: {exc.strerror or exc}.",
                fix="check the file's permissions, or use --store with another file.",
            ) from exc
        if head[_MAGIC_OFFSET:] != DUCKDB_MAGIC:
            what = "an empty file" if not head else "not a DuckDB database"
            raise StoreError(
                f"Store {target} exists and is {what} (no DuckDB header); cart-etl will not "
                "overwrite it.",
                fix="point --store at a .duckdb file written by cart-etl, or a new path.",
            )
        return target
    if read_only:
        raise StoreError(
            f"Store {target} does not exist.", fix="run `cart-etl run` first to create it."
        )
    for folder in target.parents:
        if folder.exists():
            if not folder.is_dir():
                raise StoreError(
                    f"Cannot create store {target}: {folder} is a file, not a folder.",
                    fix=f"move or rename {folder}, or use --store in an existing folder.",
                )
            break
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"Cannot create the folder {target.parent} of store {target}: {exc.strerror or exc}.",
            fix="create the folder (or fix its permissions), or use --store elsewhere.",
        ) from exc
    return target


def _open_error(target: str, exc: duckdb.Error, *, read_only: bool) -> StoreError:
    text = str(exc)
    if isinstance(exc, duckdb.IOException) and "lock" in text.lower():
        first = text.splitlines()[0]
        if read_only:
            return StoreLockedError(
                f"Store {target} is in use by another process, which is writing it ({first}); "
                "DuckDB lets no reader open a file while a writer holds it.",
                fix="wait for the running `cart-etl run` to finish and retry, or read a copy "
                "of the file taken between runs (cp STORE snapshot.duckdb).",
            )
        return StoreLockedError(
            f"Store {target} is in use by another process ({first}).",
            fix="wait for the other run (or close the session reading the store) and retry, "
            "or use --store with another file.",
        )
    if isinstance(exc, duckdb.IOException):
        return StoreError(f"Cannot open store {target}: {text}", fix="check the path.")
    return StoreError(
        f"{target} is not a readable DuckDB store: {exc}",
        fix="point --store at a .duckdb file written by cart-etl, or a new path.",
    )


def connect(
    path: Path | str,
    *,
    read_only: bool = False,
    inputs: Iterable[Path | str] = (),
    upgrade: bool = True,
) -> duckdb.DuckDBPyConnection:
    """Open (and create or upgrade, unless read-only) a store with every schema and etl table.

    Args:
        path: the ``.duckdb`` file; ``":memory:"`` for tests.
        read_only: open without taking the writer lock (analysts, reports).
        inputs: the run's inputs (folders, files, URLs); a store inside one is refused.
        upgrade: create or migrate the layout on open (writers); False leaves it to the
            caller's ``init_store`` (``cart-etl init-store`` reports what it did).

    Raises:
        StoreLockedError: another process holds the store for writing.
        StoreVersionError: the store was written by a newer cart_etl (or, read-only, an
            older one that needs ``cart-etl init-store``).
        StoreError: the file is not a DuckDB database or cannot be created.
    """
    target = str(path)
    if target != ":memory:":
        target = str(check_store_path(path, read_only=read_only, inputs=inputs))
    try:
        con = duckdb.connect(target, read_only=read_only)
    except duckdb.Error as exc:
        raise _open_error(target, exc, read_only=read_only) from exc
    try:
        # Instants are stored as TIMESTAMPTZ and exchanged with polars as UTC; the session
        # zone only affects display and Arrow export (DuckDB would otherwise use the machine's).
        con.execute("SET TimeZone = 'UTC'")
        if read_only or not upgrade:
            _check_version(con, target, read_only=read_only)
        else:
            init_store(con, target=target)
    except BaseException:
        con.close()
        raise
    return con


def store_schema_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The layout version recorded in the store; 0 before versioning; None for a new store."""
    tables = {
        name
        for (name,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'etl'"
        ).fetchall()
    }
    if "store_info" in tables:
        row = con.execute("SELECT max(schema_version) FROM etl.store_info").fetchone()
        if row is not None and row[0] is not None:
            return int(row[0])
    return 0 if "runs" in tables else None


def _check_version(con: duckdb.DuckDBPyConnection, target: str, *, read_only: bool) -> int | None:
    found = store_schema_version(con)
    if found is not None and found > STORE_SCHEMA_VERSION:
        raise StoreVersionError(
            f"Store {target} has layout version {found}, written by a newer cart_etl; this "
            f"cart_etl {_package_version()} reads version {STORE_SCHEMA_VERSION}.",
            fix="upgrade cart_etl to the version that wrote the store, or use --store with "
            "another file.",
        )
    if read_only and found is not None and found < STORE_SCHEMA_VERSION:
        raise StoreVersionError(
            f"Store {target} has layout version {found}; this cart_etl reads version "
            f"{STORE_SCHEMA_VERSION}.",
            fix=f"upgrade it with `cart-etl init-store --store {target}` (no run may be "
            "writing it), then retry.",
        )
    return found


def _migrate_0_to_1(con: duckdb.DuckDBPyConnection) -> list[str]:
    """A pre-versioning store: add the etl.runs columns it lacks."""
    have = {
        name
        for (name,) in con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'etl' AND table_name = 'runs'"
        ).fetchall()
    }
    done = []
    for column, kind in _RUNS_LATER_COLUMNS:
        if column not in have:
            con.execute(f"ALTER TABLE etl.runs ADD COLUMN {column} {kind}")
            done.append(f"added column etl.runs.{column}")
    return done


# from-version -> migration to from-version + 1; each returns what it changed.
_MIGRATIONS = {0: _migrate_0_to_1}


def init_store(con: duckdb.DuckDBPyConnection, *, target: str = "store") -> list[str]:
    """Create the schemas and etl tables if missing, or migrate an older layout (idempotent).

    Returns:
        What was done, in words (empty when the store was already current).

    Raises:
        StoreVersionError: the store was written by a newer cart_etl.
    """
    found = _check_version(con, target, read_only=False)
    if found == STORE_SCHEMA_VERSION:
        for schema in SCHEMAS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for ddl in ETL_DDL:  # a table dropped by hand comes back
            con.execute(ddl)
        return []
    done: list[str] = []
    con.begin()
    try:
        for schema in SCHEMAS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        version = found
        if version is not None:
            while version < STORE_SCHEMA_VERSION:
                done += _MIGRATIONS[version](con)
                version += 1
        for ddl in (*ETL_DDL, STORE_INFO_DDL):
            con.execute(ddl)
        now = datetime.now(UTC)
        if found is None:
            con.execute(
                "INSERT INTO etl.store_info VALUES (?, ?, ?, NULL, NULL)",
                [STORE_SCHEMA_VERSION, _package_version(), now],
            )
            done.append(f"created the store (layout version {STORE_SCHEMA_VERSION})")
        else:
            con.execute("DELETE FROM etl.store_info")
            con.execute(
                "INSERT INTO etl.store_info VALUES (?, NULL, NULL, ?, ?)",
                [STORE_SCHEMA_VERSION, _package_version(), now],
            )
            done.insert(0, f"upgraded layout version {found} to {STORE_SCHEMA_VERSION}")
        con.commit()
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.rollback()
        raise
    return done


_DISK_FULL = ("no space left", "file too large", "disk quota exceeded", "disk is full")


def is_disk_full(exc: BaseException) -> bool:
    """True for a write refused because the disk (or a file-size limit) is exhausted."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return True
    return isinstance(exc, duckdb.Error) and any(s in str(exc).lower() for s in _DISK_FULL)


def disk_full_error(
    store_path: Path | str,
    exc: BaseException,
    *,
    run: Run | None,
    command: str,
    input_checksums: Mapping[str, str],
) -> StoreFullError:
    """After a disk-full failure (connection closed): record it in etl.runs if possible.

    Re-opens the store (DuckDB replays its write-ahead log and drops the unfinished
    transaction), looks whether the run was committed before the failure (the checkpoint
    after the commit can fail too) and otherwise appends a ``failed`` row.
    """
    target = Path(store_path)
    cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    where = target.parent.absolute()
    try:
        size = f"{target.stat().st_size / 1e6:,.0f} MB"
    except OSError:
        size = "its size"
    fix = (
        f"free disk space on the filesystem of {where} (a run needs about the store's size, "
        f"{size}, free for the write-ahead log {target.name}.wal and the new blocks; also check "
        "the temporary folder and any file-size or quota limit), then re-run."
    )
    recorded = ""
    try:
        with duckdb.connect(str(target)) as con:
            status = None
            if run is not None:
                row = con.execute(
                    "SELECT status FROM etl.runs WHERE run_id = ?", [run.run_id]
                ).fetchone()
                status = row[0] if row else None
            if status == "succeeded":
                return StoreFullError(
                    f"The disk filled up after run {run.run_id if run else ''} was committed to "
                    f"{target} ({cause}): the load is in the store, but DuckDB could not "
                    "checkpoint it into the main file.",
                    fix=fix.replace(
                        "then re-run.",
                        "then open the store once (e.g. "
                        "`cart-etl init-store`) so DuckDB finishes the checkpoint.",
                    ),
                )
            failed = start_run(con, command, input_checksums)
            finish_run(
                con, failed, status="failed", message=f"disk full during the run: {cause}"[:4000]
            )
            recorded = f"the failed run {failed.run_id} is recorded in etl.runs"
    except duckdb.Error as again:
        recorded = (
            "the failure could not be recorded in etl.runs "
            f"({str(again).splitlines()[0] if str(again) else type(again).__name__})"
        )
    return StoreFullError(
        f"The disk filled up while the run wrote {target} ({cause}); nothing of this run was "
        f"committed, the store keeps its previous data and {recorded}.",
        fix=fix,
    )


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
