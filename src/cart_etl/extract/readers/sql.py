"""Extract a site delivered as database tables (SQLAlchemy 2.0), with the same site mapping."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import polars as pl
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from cart_etl.contract import ExtractStream
from cart_etl.errors import (
    ConfigurationError,
    MissingDependencyError,
    SourceError,
    SourceUnavailableError,
)
from cart_etl.extract.readers.cells import ROW_COLUMN, cell_text, number_rows, unique_names
from cart_etl.extract.readers.files import iter_raw_chunks, read_header
from cart_etl.extract.site.mapper import map_source_frame, needed_columns, resolve_columns
from cart_etl.extract.site.spec import FileSpec, SiteMapping

__all__ = [
    "SQL_SOURCE_PREFIX",
    "extract_sql",
    "load_site_export_into_sqlite",
    "redact_url",
    "sql_source",
]

SQL_SOURCE_PREFIX: Final = "sql:"
ROWID: Final = "rowid"  # SQLite's implicit row key: insertion order unless rows were deleted
_SQLITE: Final = "sqlite"
_IN_MEMORY: Final = frozenset({"", ":memory:"})
_LOAD_CHUNK_ROWS: Final = 50_000
_PASSWORD_IN_URL: Final = re.compile(r"(://[^:/@]*:)[^@]*@")
_MASK: Final = "***"


def sql_source(mapping: SiteMapping) -> str:
    """The ``source`` provenance value of a site read from a database."""
    return f"{SQL_SOURCE_PREFIX}{mapping.site}"


def redact_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***`` (safe for logs and messages)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return _PASSWORD_IN_URL.sub(rf"\1{_MASK}@", str(url))


def _scrub(text: str, url: URL | None) -> str:
    """A driver message without the URL's password, should the driver echo it."""
    password = url.password if url is not None else None
    return text.replace(str(password), _MASK) if password else text


def _engine(url: str) -> tuple[Engine, URL]:
    """An engine for ``url``; bad URLs and missing drivers are configuration errors."""
    shown = redact_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(
            f"{shown} is not a database URL.",
            fix="write it as dialect+driver://user:password@host/database, e.g. "
            "sqlite:///site.db or postgresql+psycopg://user@host/db.",
        ) from exc
    _check_sqlite_file(parsed, shown)
    try:
        return sa.create_engine(parsed), parsed
    except NoSuchModuleError as exc:
        raise ConfigurationError(
            f"{shown}: SQLAlchemy has no dialect {parsed.drivername!r}.",
            fix="use a dialect SQLAlchemy knows (sqlite, postgresql, mysql, mssql, oracle).",
        ) from exc
    except ArgumentError as exc:  # e.g. credentials in a SQLite URL
        reason = _scrub(str(exc), parsed).splitlines()[0]
        raise ConfigurationError(
            f"{shown}: invalid URL for {parsed.drivername!r}: {reason}",
            fix="see the SQLAlchemy documentation of this dialect's URL format.",
        ) from exc
    except ImportError as exc:
        raise MissingDependencyError(
            f"{shown}: the database driver is not installed ({exc.name or exc}).",
            fix=f"pip install the driver for {parsed.drivername!r} into this environment.",
        ) from exc


def _check_sqlite_file(url: URL, shown: str) -> None:
    """A SQLite file must exist: connecting would silently create an empty database."""
    database = url.database or ""
    if url.get_backend_name() != _SQLITE or database in _IN_MEMORY:
        return
    if database.startswith("file:"):
        return  # URI filenames carry their own mode (e.g. mode=ro)
    if not Path(database).exists():
        raise SourceError(
            f"{shown}: the SQLite database file {database} does not exist.",
            fix="check the path, or build it with load_site_export_into_sqlite().",
        )


def _unavailable(exc: BaseException, url: URL, shown: str) -> SourceUnavailableError:
    """A retriable error for a failed connection or query, password scrubbed."""
    orig = getattr(exc, "orig", None) or exc
    reason = _scrub(str(orig).strip().splitlines()[0] if str(orig).strip() else repr(orig), url)
    return SourceUnavailableError(
        f"Cannot read the site database {shown}: {reason}",
        fix="check that the database is running and reachable and the credentials are "
        "right; the run can be retried.",
    )


@dataclass(frozen=True, slots=True)
class _Table:
    """A table that passed the preflight: present, columns found, row order known."""

    spec: FileSpec
    resolved: Mapping[str, str]  # mapping column -> table column
    order: tuple[str, ...]


def _preflight(conn: Connection, mapping: SiteMapping, shown: str) -> list[_Table]:
    """Check every table of the mapping before reading any row."""
    inspector = sa.inspect(conn)
    present = set(inspector.get_table_names())
    tables = []
    for spec in mapping.files.values():
        if spec.table not in present:
            raise SourceError(
                f"{shown}: no table {spec.table!r}, which the site mapping expects for "
                f"{spec.where} (columns {', '.join(needed_columns(spec))}). Tables found: "
                f"{', '.join(sorted(present)) or '(none)'}.",
                fix="load the table, or set its name under "
                f"{spec.where}.table in {mapping.display_path}.",
            )
        columns = [c["name"] for c in inspector.get_columns(spec.table)]
        label = f"{shown} table {spec.table!r}"
        resolved = resolve_columns(columns, spec, label, mapping)
        order = _row_order(inspector, conn, spec, columns, label, mapping)
        tables.append(_Table(spec, resolved, order))
    return tables


def _row_order(
    inspector: Any,
    conn: Connection,
    spec: FileSpec,
    columns: Sequence[str],
    label: str,
    mapping: SiteMapping,
) -> tuple[str, ...]:
    """Row order: the mapping's order_by, else the primary key, else SQLite's rowid."""
    if spec.order_by:
        missing = [c for c in spec.order_by if c not in columns]
        if missing:
            raise SourceError(
                f"{label}: order_by column(s) {missing} not found; columns: {', '.join(columns)}.",
                fix=f"fix {spec.where}.order_by in {mapping.display_path}.",
            )
        return spec.order_by
    key = tuple(inspector.get_pk_constraint(spec.table).get("constrained_columns") or ())
    if key:
        return key
    if conn.dialect.name == _SQLITE:
        return (ROWID,)
    raise SourceError(
        f"{label}: no primary key, so the row numbers would not be reproducible.",
        fix=f"declare the row order under {spec.where}.order_by in {mapping.display_path}.",
    )


def _select(table: _Table) -> sa.Select[Any]:
    """SELECT the needed columns in the table's row order."""
    columns: list[sa.ColumnClause[Any]] = [sa.column(name) for name in table.resolved.values()]
    order: list[sa.ColumnClause[Any]] = [
        sa.literal_column(ROWID) if c == ROWID else sa.column(c) for c in table.order
    ]
    return sa.select(*columns).select_from(sa.table(table.spec.table)).order_by(*order)


def _texts(values: Sequence[object]) -> list[str | None]:
    """Cells as the CSV reader gives them: text as stored, empty text as null."""
    return [v if v.__class__ is str and v else cell_text(v) for v in values]


def _frame(rows: Sequence[Sequence[object]], names: Sequence[str], first_row: int) -> pl.DataFrame:
    """A ROW_COLUMN + mapping-named string frame from fetched rows.

    Polars builds the frame from the rows in one go; a column it does not infer as text
    holds numbers, dates ... (or mixed values), and only those are rendered by cell_text
    from the original Python values, exactly like XLSX cells.
    """
    try:
        frame = pl.DataFrame(rows, schema=list(names), orient="row", infer_schema_length=None)
        text = {name for name, dtype in frame.schema.items() if dtype == pl.String}
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
        frame, text = pl.DataFrame(), set()
    columns = [
        frame.get_column(name)
        if name in text
        else pl.Series(name, _texts([row[i] for row in rows]), dtype=pl.String)
        for i, name in enumerate(names)
    ]
    return number_rows(pl.DataFrame(columns), first_row)


def extract_sql(url: str, mapping: SiteMapping, *, chunk_rows: int = 50_000) -> ExtractStream:
    """Stream a site's tables as canonical raw frames (same mapper as the file export).

    Each spec of the mapping is read from its table (``tables:`` key, or for a ``files``
    mapping the ``table:`` key / the file stem). Values are cast to text as the CSV reader
    would show them; ``row`` is the 1-based position in the table's row order: the
    mapping's ``order_by``, else the primary key, else SQLite's rowid (insertion order).

    Raises:
        ConfigurationError: the URL is malformed or names an unknown dialect/driver.
        SourceUnavailableError: the database cannot be reached (retriable; URL redacted).
        SourceError: a table is missing or a SQLite file does not exist.
        MappingError: a table lacks a mapped column.
    """
    engine, parsed = _engine(url)
    shown = redact_url(parsed)
    try:
        with engine.connect() as conn:
            tables = _preflight(conn, mapping, shown)
    except DBAPIError as exc:
        engine.dispose()
        raise _unavailable(exc, parsed, shown) from exc
    except BaseException:
        engine.dispose()
        raise
    return _stream(engine, parsed, tables, mapping, chunk_rows)


def _stream(
    engine: Engine, url: URL, tables: list[_Table], mapping: SiteMapping, chunk_rows: int
) -> ExtractStream:
    """Read the tables in mapping order, ``chunk_rows`` rows at a time."""
    source = sql_source(mapping)
    shown = redact_url(url)
    try:
        for table in tables:
            yield from _table_batches(engine, table, mapping, source, chunk_rows, url, shown)
    finally:
        engine.dispose()


def _table_batches(
    engine: Engine,
    table: _Table,
    mapping: SiteMapping,
    source: str,
    chunk_rows: int,
    url: URL,
    shown: str,
) -> ExtractStream:
    """One table, streamed (server-side cursor where the driver has one)."""
    names = list(table.resolved)
    next_row = 1
    try:
        with engine.connect() as conn:
            result = conn.execution_options(yield_per=chunk_rows).execute(_select(table))
            for part in result.partitions(chunk_rows):
                frame = _frame(part, names, next_row)
                next_row += len(part)
                yield from map_source_frame(frame, table.spec, mapping, source, table.spec.table)
    except DBAPIError as exc:
        raise _unavailable(exc, url, shown) from exc


def load_site_export_into_sqlite(
    export_dir: Path, mapping: SiteMapping, sqlite_path: Path
) -> dict[str, int]:
    """Copy every file of a site export into a SQLite database, one TEXT table per file.

    Tables are named like the file's ``table`` (default: the file stem), columns like the
    header cells; each cell is stored as the file reader reads it (text, empty = NULL) in
    file order, so rowid order is file order. Existing tables of the same name are
    replaced. Used by tests and to try the SQL path on a file delivery.

    Returns:
        Rows copied per table.

    Raises:
        SourceError: a file is missing, unreadable or has rows wider than its header.
    """
    engine = sa.create_engine(f"{_SQLITE}:///{sqlite_path}")
    counts: dict[str, int] = {}
    try:
        with engine.begin() as conn:
            for spec in mapping.files.values():
                counts[spec.table] = _copy_file(conn, export_dir / spec.name, spec)
    finally:
        engine.dispose()
    return counts


def _copy_file(conn: Connection, path: Path, spec: FileSpec) -> int:
    """Create the file's table and insert its rows; return the row count."""
    names = unique_names(read_header(path, spec))
    quote = conn.dialect.identifier_preparer.quote
    table = quote(spec.table)
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    conn.exec_driver_sql(f"CREATE TABLE {table} ({', '.join(f'{quote(n)} TEXT' for n in names)})")
    # Identifiers are quoted by the dialect; the values go in as qmark parameters.
    insert = f"INSERT INTO {table} VALUES ({', '.join('?' for _ in names)})"
    count = 0
    for chunk in iter_raw_chunks(path, spec, _LOAD_CHUNK_ROWS):
        if chunk.bad_rows:
            rows = ", ".join(str(b.row) for b in chunk.bad_rows[:5])
            raise SourceError(
                f"{path}: row(s) {rows} have more cells than the header; they cannot be "
                "stored in a table.",
                fix="repair those rows in the export first.",
            )
        frame = chunk.frame.drop(ROW_COLUMN)
        if frame.height:
            conn.exec_driver_sql(insert, frame.rows())
        count += frame.height
    return count
