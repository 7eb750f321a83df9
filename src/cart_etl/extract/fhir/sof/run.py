"""Run a ViewDefinition on a DuckDB table of FHIR resources (SQL on FHIR v2
``$viewdefinition-run`` semantics, in-process).

The source table has ``resource_type VARCHAR`` and ``resource JSON`` and optionally
``_key VARCHAR`` (then ``getResourceKey()`` returns it).  The optional references table
has ``ref VARCHAR, key VARCHAR`` and optionally ``type VARCHAR``; both optional columns are
detected here with ``DESCRIBE``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from cart_etl.extract.fhir.sof import sqlbits as sb
from cart_etl.extract.fhir.sof.compile import compile_preparsed, compile_view, grouped_refs_sql
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


# a pre-parsed relation with at least this many rows is read by one scan per DuckDB thread
# (rowid ranges under UNION ALL): a DuckDB table scan is parallel per row group (122,880
# rows), so a smaller table is otherwise read by one thread
SPLIT_MIN_ROWS = 8192


@dataclass
class _TypeGroup:
    """The views of one resource type and the root member chains they read."""

    resource: str
    shared: dict[tuple[str, ...], int] = field(default_factory=dict)
    sqls: dict[str, str] = field(default_factory=dict)  # view name -> compiled SQL
    table: str | None = None  # the pre-parsed temp table, once built
    rows: int = 0
    failed: bool = False  # pre-parsing failed: its views run one by one


def _threads(con: duckdb.DuckDBPyConnection) -> int:
    try:
        (n,) = con.execute("SELECT current_setting('threads')").fetchone() or (1,)
        return max(int(n), 1)
    except (duckdb.Error, ValueError):
        return 1


def _ranges(
    con: duckdb.DuckDBPyConnection, relation: str, where: str, parts: int
) -> list[tuple[int, int]] | None:
    """``parts`` rowid ranges ``[lo, hi)`` covering the rows of ``relation`` matching
    ``where``, or None (too few rows, one thread, or no rowid: a view)."""
    if parts < 2:
        return None
    try:
        lo, hi, n = con.execute(
            f"SELECT min(rowid), max(rowid), count(*) FROM {relation} WHERE {where}"
        ).fetchone() or (None, None, 0)
    except duckdb.Error:
        return None
    if lo is None or hi is None or n < SPLIT_MIN_ROWS:
        return None
    step = (hi - lo + parts) // parts
    return [(lo + i * step, lo + (i + 1) * step) for i in range(parts)]


def _split(select: str, relation: str, where: str, ranges: list[tuple[int, int]] | None) -> str:
    """``SELECT ... FROM relation WHERE where`` as one scan, or as one scan per rowid range
    concatenated in rowid order (same rows, same order, one thread each)."""
    if ranges is None:
        return f"{select} FROM {relation} WHERE {where}"
    return " UNION ALL ".join(
        f"({select} FROM {relation} WHERE {where} AND rowid >= {lo} AND rowid < {hi})"
        for lo, hi in ranges
    )


def _preparse(
    con: duckdb.DuckDBPyConnection,
    group: _TypeGroup,
    source: str,
    key_column: bool,
    parts: int,
) -> None:
    """One pass over the resources of ``group.resource``: each is parsed once, its root
    member chains (all views of the type) extracted into the temp table ``group.table``."""
    name = f"_sof_pre_{uuid.uuid4().hex[:12]}"
    keep = ["resource_type"] + (["_key"] if key_column else [])
    if any("_src.resource" in sql for sql in group.sqls.values()):
        keep.append("resource")
    cols = ", ".join(f"_s.{c}" for c in keep)
    chains = sorted(group.shared, key=group.shared.__getitem__)
    where = f"_s.resource_type = {sb.sql_str(group.resource)}"
    rel = f"{source} AS _s"
    if chains:
        paths = "[" + ", ".join(sb.sql_str(sb.chain_path(c)) for c in chains) + "]"
        select = f"SELECT {cols}, json_extract(_s.resource, {paths}) AS _rp"
        body = _split(select, rel, where, _ranges(con, rel, where, parts))
    else:
        body = f"SELECT {cols} FROM {rel} WHERE {where}"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {body}")
    group.table = name
    (group.rows,) = con.execute(f"SELECT count(*) FROM {name}").fetchone() or (0,)


def _pre_source(group: _TypeGroup, parts: int) -> str:
    """The pre-parsed table as the views' source, split for the threads when large."""
    assert group.table is not None
    if parts < 2 or group.rows < SPLIT_MIN_ROWS:
        return group.table
    step = (group.rows + parts - 1) // parts
    ranges = [(i * step, (i + 1) * step) for i in range(parts)]
    return f"({_split('SELECT *', group.table, 'true', ranges)})"


def materialize_views(
    con: duckdb.DuckDBPyConnection,
    views: Mapping[str, Mapping[str, Any]],
    *,
    source: str = "resources",
    references: str | None = None,
    table_prefix: str = "v_",
) -> dict[str, int]:
    """:func:`materialize_view` for many views (name -> ViewDefinition), each into the
    table ``<table_prefix><name>``, with each resource type's JSON parsed once: the views
    are compiled first (grouped by ``resource``, sharing one registry of root member
    chains), then per type one pass extracts all chains into a temp table (split over the
    DuckDB threads) which the views of that type read; the references table is grouped
    once.  Views run in the mapping's order; returns name -> rows.

    Results and errors are those of calling :func:`materialize_view` on each view in turn
    (on the first error the tables of the views before it exist and the error is raised):
    a view that does not compile, or whose pre-parsed run fails in DuckDB, is run by
    :func:`materialize_view` itself.  The temp tables are dropped before returning."""
    key_column = "_key" in _columns_of(con, source)
    reference_types = references is not None and "type" in _columns_of(con, references)
    parts = _threads(con)
    # placeholders for the pre-parsed source and the grouped references, replaced once
    # those exist (no view text can contain them)
    token = uuid.uuid4().hex
    src_token, refs_token = f"_sofsrc_{token}", f"_sofrefs_{token}"
    groups: dict[str, _TypeGroup] = {}
    for vname, view in views.items():
        try:
            resource = str(view["resource"])  # type: ignore[index]
            group = groups.setdefault(resource, _TypeGroup(resource))
            group.sqls[vname] = compile_preparsed(
                view,
                source=src_token,
                shared=group.shared,
                references=refs_token if references is not None else None,
                key_column=key_column,
                reference_types=reference_types,
                grouped_refs=True,
            )
        except Exception:
            continue
    temps: list[str] = []
    refs_table: str | None = None
    out: dict[str, int] = {}
    try:
        for vname, view in views.items():
            table = table_prefix + vname
            resource = view.get("resource") if isinstance(view, Mapping) else None  # type: ignore[assignment]
            group = groups.get(str(resource))  # type: ignore[assignment]
            sql = group.sqls.get(vname) if group is not None else None  # type: ignore[assignment]
            if group is not None and sql is not None and not group.failed:
                if group.table is None:
                    try:
                        _preparse(con, group, source, key_column, parts)
                        temps.append(str(group.table))
                    except duckdb.Error:
                        group.failed = True
                needs_refs = references is not None and refs_token in sql
                if needs_refs and refs_table is None and not group.failed:
                    refs_table = f"_sof_refs_{uuid.uuid4().hex[:12]}"
                    try:
                        con.execute(
                            f"CREATE OR REPLACE TEMP TABLE {refs_table} AS "
                            f"{grouped_refs_sql(str(references), reference_types)}"
                        )
                        temps.append(refs_table)
                    except duckdb.Error:
                        refs_table = ""
                if not group.failed and (not needs_refs or refs_table):
                    run_sql = sql.replace(src_token, _pre_source(group, parts))
                    if needs_refs:
                        run_sql = run_sql.replace(refs_token, str(refs_table))
                    name = sb.ident(table)
                    try:
                        con.execute(f"CREATE OR REPLACE TABLE {name} AS {run_sql}")
                    except duckdb.Error:
                        pass  # materialize_view below: the same error, translated
                    else:
                        (rows,) = con.execute(f"SELECT count(*) FROM {name}").fetchone() or (0,)
                        out[vname] = int(rows)
                        continue
            out[vname] = materialize_view(con, view, table, source=source, references=references)
    finally:
        for t in temps:
            con.execute(f"DROP TABLE IF EXISTS {t}")
    return out
