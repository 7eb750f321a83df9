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


def run_view(
    con: duckdb.DuckDBPyConnection,
    view: Mapping[str, Any],
    *,
    source: str = "resources",
    references: str | None = None,
) -> pa.Table:
    """Compile and execute ``view``; columns in the view's column order, named as in the
    view.  Run-time violations (a non-collection column with several values, a non-Boolean
    ``where``) raise :class:`ViewDefinitionError`."""
    key_column = "_key" in _columns_of(con, source)
    reference_types = references is not None and "type" in _columns_of(con, references)
    sql = compile_view(
        view,
        source=source,
        references=references,
        key_column=key_column,
        reference_types=reference_types,
    )
    try:
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        text = str(exc)
        if ERROR_MARK in text:
            detail = text.split(ERROR_MARK, 1)[1].splitlines()[0]
            raise ViewDefinitionError(detail) from exc
        if isinstance(exc, duckdb.BinderException | duckdb.ParserException):
            raise ViewDefinitionError(
                f"view {view_name(view)!r}: DuckDB could not compile it: {text}"
            ) from exc
        raise
