"""Post-load great-expectations suite on the marts (pandas batches read from DuckDB).

GX runs on pandas batches, not on its SQL datasource (GX 1.x's SQL path fails on DuckDB with
SQLAlchemy 2.x). The suite is generated from the mart invariants declared in
``schemas/marts_invariants.yaml`` (``cart_etl.load.marts.DECLARED``), the same declaration the
SQL checks come from: each test GX can express becomes its expectation, carrying the test's
name (``meta.invariant``) and reason (``notes``, shown in Data Docs).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import duckdb

from cart_etl.load import marts
from cart_etl.validate.expectations import gx_context, validate_table

# Declared test -> GX 1.x expectation (the others are marts.SQL_ONLY_TESTS).
EXPECTATIONS: dict[str, str] = {
    "not_null": "ExpectColumnValuesToNotBeNull",
    "unique": "ExpectColumnValuesToBeUnique",
    "accepted_values": "ExpectColumnValuesToBeInSet",
    "accepted_range": "ExpectColumnValuesToBeBetween",
    "unique_combination_of_columns": "ExpectCompoundColumnsToBeUnique",
    "column_pair_greater_than": "ExpectColumnPairValuesAToBeGreaterThanB",
}
_COLUMN_KWARGS = ("column", "column_list", "column_A", "column_B")
_SHOWN = (*_COLUMN_KWARGS, "min_value", "max_value", "value_set")


def expectation(inv: marts.Invariant) -> tuple[str, dict[str, Any]] | None:
    """The GX expectation (class name, kwargs) of a declared test; None if it is SQL only."""
    if inv.sql_only or inv.test not in EXPECTATIONS:
        return None
    a = inv.args
    kwargs: dict[str, Any]
    if inv.test == "accepted_values":
        kwargs = {"column": inv.column, "value_set": list(a["values"])}
    elif inv.test == "accepted_range":
        kwargs = {"column": inv.column} | {k: a[k] for k in ("min_value", "max_value") if k in a}
    elif inv.test == "unique_combination_of_columns":
        # NULL passes, as in the SQL check (the key columns have their own not_null tests).
        kwargs = {
            "column_list": list(a["combination_of_columns"]),
            "ignore_row_if": "any_value_is_missing",
        }
    elif inv.test == "column_pair_greater_than":
        kwargs = {
            "column_A": a["column_A"],
            "column_B": a["column_B"],
            "or_equal": bool(a.get("or_equal", True)),
            "ignore_row_if": "either_value_is_missing",
        }
    else:
        kwargs = {"column": inv.column}
    kwargs |= {"meta": {"invariant": inv.name}, "notes": inv.reason}
    return EXPECTATIONS[inv.test], kwargs


def postload_suites(
    invariants: Iterable[marts.Invariant],
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Table -> expectation specs (class name, kwargs) of every test GX runs, in order."""
    suites: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for inv in invariants:
        spec = expectation(inv)
        if spec is not None:
            suites.setdefault(inv.table, []).append(spec)
    return suites


POSTLOAD_SUITES: dict[str, list[tuple[str, dict[str, Any]]]] = postload_suites(marts.DECLARED)


def _columns(kwargs: dict[str, Any]) -> list[str]:
    cols = [kwargs[k] for k in _COLUMN_KWARGS if k in kwargs]
    return [c for v in cols for c in (v if isinstance(v, list) else [v])]


def run_postload_suite(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Validate the marts with GX; one result dict per expectation (table, expectation, ...).

    Besides ``table``, ``expectation``, ``success`` and ``unexpected_count`` each result names
    its declared ``invariant`` and ``reason``. An empty mart has no results (as before).
    """
    gx, context = gx_context()
    source = context.data_sources.add_pandas("cart_etl_marts")
    results: list[dict[str, Any]] = []
    for table, specs in POSTLOAD_SUITES.items():
        cols = sorted({c for _, kwargs in specs for c in _columns(kwargs)})
        pdf = con.execute(f"SELECT {', '.join(cols)} FROM marts.{table}").df()
        if pdf.empty:
            continue
        for r, cfg in validate_table((gx, context), source, table, pdf, specs, "marts"):
            shown = ", ".join(f"{k}={cfg.kwargs[k]}" for k in _SHOWN if k in cfg.kwargs)
            invariant = (cfg.meta or {}).get("invariant", "")
            results.append(
                {
                    "table": table,
                    "expectation": f"{cfg.type}({shown}) [{invariant}]",
                    "success": bool(r.success),
                    "unexpected_count": int((r.result or {}).get("unexpected_count") or 0),
                    "invariant": invariant,
                    "reason": cfg.notes,
                }
            )
    return results
