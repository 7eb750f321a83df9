"""Analysis marts (``schemas/marts.sql``): built in SQL from the staged derivations, checked.

The invariants are declared once, in ``schemas/marts_invariants.yaml``: this module reads the
declaration and generates the SQL checks (``check_invariants``); ``cart_etl.load.postload``
generates the great-expectations suite from the same declaration.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import yaml

from cart_etl.config import Settings
from cart_etl.errors import ConfigurationError

# Marts derived per patient bucket (staged as ``staging.d_<mart>``), in the order they are
# built, each with the ORDER BY that makes its storage order deterministic.
DERIVED_MARTS: dict[str, str] = {
    "patient": "m.person_id",
    "patient_detail": "m.person_id",
    "crs_episode": "m.person_id, d.episode_number",
    "treatment": "m.person_id, d.drug, d.start_at, d.source_file, d.source_row",
    "lab_timeseries": "m.person_id, d.category, d.item, d.measured_at",
}
MART_TABLES: tuple[str, ...] = (*DERIVED_MARTS, "consort")


def marts_ddl(schemas_dir: Path | None = None) -> str:
    """The mart DDL (the analysts' contract) as written in ``schemas/marts.sql``."""
    return ((schemas_dir or Settings().schemas_dir) / "marts.sql").read_text(encoding="utf-8")


def create_marts(con: duckdb.DuckDBPyConnection, schemas_dir: Path | None = None) -> None:
    """Drop and recreate every mart table (a run rebuilds the marts inside its transaction)."""
    for table in MART_TABLES:
        con.execute(f"DROP TABLE IF EXISTS marts.{table}")
    con.execute(marts_ddl(schemas_dir))


def _insert_with_person(con: duckdb.DuckDBPyConnection, mart: str) -> None:
    """INSERT ``staging.d_<mart>`` into the mart, adding person_id, in the mart's column order."""
    cols = [r[0] for r in con.execute(f"DESCRIBE marts.{mart}").fetchall()]
    select = ", ".join("m.person_id" if c == "person_id" else f"d.{c}" for c in cols)
    con.execute(
        f"INSERT INTO marts.{mart} SELECT {select} FROM staging.d_{mart} d "
        f"JOIN staging.person_map m USING (study_id) ORDER BY {DERIVED_MARTS[mart]}"
    )


def build_marts(con: duckdb.DuckDBPyConnection, schemas_dir: Path | None = None) -> None:
    """Fill the marts from ``staging.d_<mart>`` (derived per bucket) and ``staging.person_map``."""
    create_marts(con, schemas_dir)
    for mart in DERIVED_MARTS:
        _insert_with_person(con, mart)
    # CONSORT boxes (paper Figure 1), in flow order, from the patient mart itself.
    con.execute(
        """
        INSERT INTO marts.consort
        SELECT row_number() OVER (ORDER BY ord)::INTEGER, box, patients::INTEGER FROM (
            SELECT 1 AS ord, 'screened' AS box, count(*) AS patients FROM marts.patient
            UNION ALL SELECT 2, 'excluded:not_infused', count(*) FILTER (WHERE NOT is_infused)
                FROM marts.patient
            UNION ALL SELECT 3, 'infused', count(*) FILTER (WHERE is_infused) FROM marts.patient
            UNION ALL SELECT 4, 'excluded:followup_lt_28d',
                count(*) FILTER (WHERE exclusion_reason = 'followup_lt_28d') FROM marts.patient
            UNION ALL SELECT 5, 'excluded:data_lost',
                count(*) FILTER (WHERE exclusion_reason = 'data_lost') FROM marts.patient
            UNION ALL SELECT 6, 'analysed', count(*) FILTER (WHERE is_included) FROM marts.patient
            UNION ALL SELECT 7, 'analysed:toci',
                count(*) FILTER (WHERE is_included AND is_toci) FROM marts.patient
            UNION ALL SELECT 8, 'analysed:no_toci',
                count(*) FILTER (WHERE is_included AND NOT is_toci) FROM marts.patient
        )
        """
    )


INVARIANTS_FILE = "marts_invariants.yaml"

# Declared test -> (required, optional) arguments besides name, reason and sql_only.
COLUMN_TESTS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "not_null": (frozenset(), frozenset()),
    "unique": (frozenset(), frozenset()),
    "accepted_values": (frozenset({"values"}), frozenset()),
    "accepted_range": (frozenset(), frozenset({"min_value", "max_value"})),
}
TABLE_TESTS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "unique_combination_of_columns": (frozenset({"combination_of_columns"}), frozenset()),
    "column_pair_greater_than": (frozenset({"column_A", "column_B"}), frozenset({"or_equal"})),
    "relationships": (frozenset({"columns", "to"}), frozenset()),
    "expression_is_true": (frozenset({"expression"}), frozenset()),
    "violating_rows": (frozenset({"query"}), frozenset()),
}
# Tests no GX expectation can express on one pandas batch: the declaration says why.
SQL_ONLY_TESTS = frozenset({"relationships", "expression_is_true", "violating_rows"})
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*", re.IGNORECASE)


@dataclass(frozen=True)
class Invariant:
    """One declared test of a mart: what it checks (``test`` + ``args``) and why (``reason``)."""

    name: str
    table: str
    test: str
    reason: str
    args: Mapping[str, Any] = field(default_factory=dict, hash=False)
    sql_only: str | None = None  # why GX does not run it (None: GX runs it too)

    @property
    def column(self) -> str:
        return str(self.args["column"])

    @property
    def sql(self) -> str:
        """A query whose single value is the number of rows violating the invariant."""
        return f"SELECT count(*) FROM ({self.rows_sql})"

    @property
    def rows_sql(self) -> str:
        """A query returning the rows that violate the invariant (every column of the mart)."""
        t, a = f"marts.{self.table}", self.args
        if self.test == "not_null":
            return f"SELECT * FROM {t} WHERE {self.column} IS NULL"
        if self.test in ("unique", "unique_combination_of_columns"):
            cols = [self.column] if self.test == "unique" else list(a["combination_of_columns"])
            present = " AND ".join(f"{c} IS NOT NULL" for c in cols)
            return (
                f"SELECT * EXCLUDE (_n) FROM (SELECT *, count(*) OVER (PARTITION BY "
                f"{', '.join(cols)}) AS _n FROM {t} WHERE {present}) WHERE _n > 1"
            )
        if self.test == "accepted_values":
            values = ", ".join(_literal(v) for v in a["values"])
            return f"SELECT * FROM {t} WHERE {self.column} NOT IN ({values})"
        if self.test == "accepted_range":
            outside = [f"{self.column} < {_literal(a['min_value'])}"] if "min_value" in a else []
            if "max_value" in a:
                outside.append(f"{self.column} > {_literal(a['max_value'])}")
            return f"SELECT * FROM {t} WHERE {' OR '.join(outside)}"
        if self.test == "column_pair_greater_than":
            op = "<" if a.get("or_equal", True) else "<="
            return f"SELECT * FROM {t} WHERE {a['column_A']} {op} {a['column_B']}"
        if self.test == "relationships":
            cols = list(a["columns"])
            present = " AND ".join(f"c.{c} IS NOT NULL" for c in cols)
            match = " AND ".join(f"p.{c} = c.{c}" for c in cols)
            return (
                f"SELECT c.* FROM {t} c WHERE {present} AND NOT EXISTS "
                f"(SELECT 1 FROM marts.{a['to']} p WHERE {match})"
            )
        if self.test == "expression_is_true":
            return f"SELECT * FROM {t} WHERE NOT ({a['expression']})"
        return f"SELECT * FROM ({a['query']})"  # violating_rows


def _literal(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigurationError(f"Invariant value {value!r} is not a string or a number.")
    return "'" + value.replace("'", "''") + "'" if isinstance(value, str) else repr(value)


def _one_test(entry: Any, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, Mapping) and len(entry) == 1:
        ((test, spec),) = entry.items()
        if isinstance(spec, Mapping):
            return str(test), dict(spec)
    raise ConfigurationError(
        f"{where}: a test is written `- <test>: {{name: ..., reason: ...}}`, got {entry!r}."
    )


def _invariant(
    table: str,
    entry: Any,
    kinds: dict[str, tuple[frozenset[str], frozenset[str]]],
    column: str | None,
    model_sql_only: str | None,
) -> Invariant:
    where = f"{INVARIANTS_FILE}, model {table}" + (f", column {column}" if column else "")
    test, spec = _one_test(entry, where)
    if test not in kinds:
        raise ConfigurationError(
            f"{where}: unknown test {test!r} here.", fix=f"use one of {', '.join(kinds)}."
        )
    name, reason = spec.pop("name", None), spec.pop("reason", None)
    sql_only = spec.pop("sql_only", None) or model_sql_only
    if not isinstance(name, str) or not name.startswith(f"{table}.") or not reason:
        raise ConfigurationError(
            f"{where}: test {test} needs a name '{table}.<what>' and a one-line reason."
        )
    required, optional = kinds[test]
    unknown, missing = set(spec) - required - optional, required - set(spec)
    if unknown or missing or (test == "accepted_range" and not spec):
        raise ConfigurationError(
            f"{where}: {name}: arguments {sorted(spec)} do not fit {test}.",
            fix=f"give {sorted(required) or sorted(optional)}.",
        )
    if test in SQL_ONLY_TESTS and not sql_only:
        raise ConfigurationError(
            f"{where}: {name}: {test} has no GX expectation.", fix="say why in `sql_only`."
        )
    names = [column] if column else []
    names += [spec[k] for k in ("column_A", "column_B", "to") if k in spec]
    names += list(spec.get("combination_of_columns", ())) + list(spec.get("columns", ()))
    if not all(isinstance(n, str) and _IDENTIFIER.fullmatch(n) for n in names):
        raise ConfigurationError(f"{where}: {name}: {names} are not all column/table names.")
    if column:
        spec["column"] = column
    return Invariant(name, table, test, str(reason), spec, sql_only)


def load_invariants(schemas_dir: Path | None = None) -> tuple[Invariant, ...]:
    """Every test declared in ``schemas/marts_invariants.yaml``, in declaration order."""
    path = (schemas_dir or Settings().schemas_dir) / INVARIANTS_FILE
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out: list[Invariant] = []
    for model in doc.get("models", []):
        table, sql_only = model["name"], model.get("sql_only")
        for col in model.get("columns", []):
            for entry in col.get("tests", []):
                out.append(_invariant(table, entry, COLUMN_TESTS, col["name"], sql_only))
        for entry in model.get("tests", []):
            out.append(_invariant(table, entry, TABLE_TESTS, None, sql_only))
    names = [i.name for i in out]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigurationError(f"{INVARIANTS_FILE}: test names used twice: {dupes}.")
    return tuple(out)


# The declaration, and the SQL check generated from each test: (name, reason, SQL counting
# the violating rows).
DECLARED: tuple[Invariant, ...] = load_invariants()
INVARIANTS: tuple[tuple[str, str, str], ...] = tuple((i.name, i.reason, i.sql) for i in DECLARED)


def check_invariants(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int]]:
    """Run every mart invariant; return (name, rule, violations) for those that fail."""
    failed = []
    for name, rule, sql in INVARIANTS:
        rows = con.execute(sql).fetchall()
        count = int(rows[0][0]) if rows and rows[0][0] is not None else 0
        if count:
            failed.append((name, rule, count))
    return failed


def violating_study_ids(con: duckdb.DuckDBPyConnection, name: str, most: int = 5) -> list[str]:
    """Up to ``most`` study ids of the rows violating invariant ``name`` (sorted), so that a
    failed run names the patients to look up; empty when its rows carry no study id."""
    declared = {i.name: i for i in DECLARED}.get(name)
    if declared is None:
        return []
    try:
        rows = con.execute(
            f"SELECT DISTINCT study_id FROM ({declared.rows_sql}) "
            f"WHERE study_id IS NOT NULL ORDER BY 1 LIMIT {int(most)}"
        ).fetchall()
    except duckdb.BinderException:  # the mart (e.g. consort) has no study_id column
        return []
    return [str(r[0]) for r in rows]
