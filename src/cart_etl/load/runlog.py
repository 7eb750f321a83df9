"""What a run reads back from the store: the last succeeded run, row counts, the CONSORT flow."""

from __future__ import annotations

import duckdb


def last_success(con: duckdb.DuckDBPyConnection, digest: str) -> str | None:
    """The run id of the latest succeeded run if its fingerprint is ``digest``, else None."""
    rows = con.execute(
        "SELECT run_id, input_checksums->>'_fingerprint' FROM etl.runs "
        "WHERE status = 'succeeded' ORDER BY started_at DESC LIMIT 1"
    ).fetchall()
    return rows[0][0] if rows and rows[0][1] == digest else None


def row_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows per ``omop.*`` and ``marts.*`` table (recorded in ``etl.runs.row_counts``)."""
    tables = con.execute(
        "SELECT schema_name || '.' || table_name FROM duckdb_tables() "
        "WHERE schema_name IN ('omop', 'marts') ORDER BY 1"
    ).fetchall()
    return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]) for (t,) in tables}


def consort(con: duckdb.DuckDBPyConnection) -> list[tuple[str, int]]:
    """(box, patients) of ``marts.consort`` in flow order; empty before the first load."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() "
        "WHERE schema_name = 'marts' AND table_name = 'consort'"
    ).fetchall()[0][0]
    if not exists:
        return []
    rows = con.execute("SELECT box, patients FROM marts.consort ORDER BY step").fetchall()
    return [(box, int(n)) for box, n in rows]
