"""Run a ViewDefinition on a DuckDB table of FHIR resources (SQL on FHIR v2
``$viewdefinition-run`` semantics, in-process).

The source table has ``resource_type VARCHAR`` and ``resource JSON`` and optionally
``_key VARCHAR`` (then ``getResourceKey()`` returns it).  The optional references table
has ``ref VARCHAR, key VARCHAR`` and optionally ``type VARCHAR``; both optional columns are
detected here with ``DESCRIBE``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb
import pyarrow as pa

from cart_etl.extract.fhir.sof.compile import compile_view
from cart_etl.extract.fhir.sof.errors import ViewDefinitionError
from cart_etl.extract.fhir.sof.sqlbits import ERROR_MARK
from cart_etl.extract.fhir.sof.view import view_name


def _columns_of(con: duckdb.DuckDBPyConnection, relation: str) -> set[str]:
    rows = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    return {str(r[0]) for r in rows}


def _compile(
    con: duckdb.DuckDBPyConnection,
    view: Mapping[str, Any],
    source: str,
    references: str | None,
) -> str:
    key_column = "_key" in _columns_of(con, source)
    reference_types = references is not None and "type" in _columns_of(con, references)
    return compile_view(
        view,
        source=source,
        references=references,
        key_column=key_column,
        reference_types=reference_types,
    )


def _translate(view: Mapping[str, Any], exc: duckdb.Error) -> Exception:
    text = str(exc)
    if ERROR_MARK in text:
        detail = text.split(ERROR_MARK, 1)[1].splitlines()[0]
        return ViewDefinitionError(detail)
    if isinstance(exc, duckdb.BinderException | duckdb.ParserException):
        return ViewDefinitionError(f"view {view_name(view)!r}: DuckDB could not compile it: {text}")
    return exc


def run_view(
    con: duckdb.DuckDBPyConnection,
    view: Mapping[str, Any],
    *,
    source: str = "resources",
    references: str | None = None,
) -> pa.Table:
    """Compile and execute ``view``; columns in the view's column order, named as in the
    view.  Run-time violations (a non-collection column with several values, a non-Boolean
    ``where``) raise :class:`ViewDefinitionError`.  The whole result is one in-memory
    Arrow table: for large inputs use :func:`materialize_view`."""
    sql = _compile(con, view, source, references)
    try:
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        err = _translate(view, exc)
        if err is exc:
            raise
        raise err from exc


def materialize_view(
    con: duckdb.DuckDBPyConnection,
    view: Mapping[str, Any],
    table: str,
    *,
    source: str = "resources",
    references: str | None = None,
) -> int:
    """Like :func:`run_view`, but the rows go into the DuckDB table ``table`` (``CREATE OR
    REPLACE TABLE "<table>" AS ...``) without leaving DuckDB: the result is streamed into
    the table (spilled to disk by DuckDB when the database is a file), never held by Python.
    Returns the number of rows.  On an error the previous table of that name is kept."""
    sql = _compile(con, view, source, references)
    name = '"' + table.replace('"', '""') + '"'
    try:
        con.execute(f"CREATE OR REPLACE TABLE {name} AS {sql}")
    except duckdb.Error as exc:
        err = _translate(view, exc)
        if err is exc:
            raise
        raise err from exc
    (rows,) = con.execute(f"SELECT count(*) FROM {name}").fetchone() or (0,)
    return int(rows)
