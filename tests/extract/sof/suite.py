"""Load and run the vendored SQL on FHIR v2 conformance tests (tests/*.json of
FHIR/sql-on-fhir-v2), comparing results the way sof-js/tests/compliance.test.js does:
rows as a multiset (its ``canonicalize`` sorts both sides), column names as in
``expectColumns``, ``expectError`` passing only on :class:`ViewDefinitionError`."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from cart_etl.extract.fhir.sof import ViewDefinitionError, run_view

DATA = Path(__file__).resolve().parents[2] / "data" / "sql-on-fhir-v2"


@dataclass(frozen=True)
class Case:
    file: str
    title: str
    tags: tuple[str, ...]
    test: dict[str, Any]
    resources: list[dict[str, Any]]

    @property
    def id(self) -> str:
        return f"{self.file}:{self.title}"


def load_cases() -> list[Case]:
    cases = []
    for path in sorted(DATA.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for t in doc["tests"]:
            cases.append(Case(path.stem, t["title"], tuple(t.get("tags", [])), t, doc["resources"]))
    return cases


def resource_table(
    resources: list[dict[str, Any]],
    con: duckdb.DuckDBPyConnection | None = None,
    table: str = "resources",
) -> duckdb.DuckDBPyConnection:
    """``table(resource_type VARCHAR, resource JSON)`` holding ``resources``."""
    con = con or duckdb.connect()
    con.execute(f"CREATE OR REPLACE TABLE {table} (resource_type VARCHAR, resource JSON)")
    rows = [(r.get("resourceType"), json.dumps(r)) for r in resources]
    con.execute(
        f"INSERT INTO {table} SELECT * FROM (SELECT unnest($1) AS t, unnest($2) AS r)",
        [[t for t, _ in rows], [r for _, r in rows]],
    )
    return con


_SHARED: dict[str, Any] = {}


def _source(case: Case) -> tuple[duckdb.DuckDBPyConnection, str]:
    """One in-memory database; each test file's resources in its own schema."""
    if "con" not in _SHARED:
        _SHARED["con"] = duckdb.connect()
    con: duckdb.DuckDBPyConnection = _SHARED["con"]
    schema = "f_" + "".join(ch if ch.isalnum() else "_" for ch in case.file)
    if schema not in _SHARED:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        resource_table(case.resources, con, f"{schema}.resources")
        _SHARED[schema] = True
    return con, f"{schema}.resources"


def _canon(v: Any) -> Any:
    if v is None:
        return ("null",)
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, int | float):
        return ("num", round(float(v), 9))
    if isinstance(v, str):
        return ("str", v)
    if isinstance(v, list):
        return ("list", tuple(_canon(x) for x in v))
    return ("json", json.dumps(v, sort_keys=True))


def _rows(rows: list[dict[str, Any]]) -> Counter[Any]:
    return Counter(tuple(sorted((k, _canon(v)) for k, v in r.items())) for r in rows)


def run_case(case: Case) -> tuple[bool, str]:
    """(passed, reason)."""
    t = case.test
    con, source = _source(case)
    try:
        table = run_view(con, t["view"], source=source)
    except ViewDefinitionError as exc:
        if t.get("expectError"):
            return True, "error as expected"
        return False, f"ViewDefinitionError: {exc}"
    except Exception as exc:
        return False, f"{type(exc).__name__}: {str(exc)[:300]}"
    if t.get("expectError"):
        return False, "expected an error, got rows"
    rows = table.to_pylist()
    if "expectColumns" in t and table.column_names != t["expectColumns"]:
        return False, f"columns {table.column_names} != {t['expectColumns']}"
    if "expectCount" in t and len(rows) != t["expectCount"]:
        return False, f"{len(rows)} rows, expected {t['expectCount']}"
    if "expect" in t:
        got, want = _rows(rows), _rows(t["expect"])
        if got != want:
            extra = list((got - want).elements())[:3]
            missing = list((want - got).elements())[:3]
            return False, f"rows differ: unexpected {extra}, missing {missing}"
    return True, "ok"
