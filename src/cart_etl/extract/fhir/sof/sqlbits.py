"""SQL fragments shared by the FHIRPath and ViewDefinition compilers.

A FHIRPath collection (FHIRPath §4 "Collections") is a DuckDB ``JSON[]``; a singleton
"node" is a ``JSON`` value (SQL NULL for the empty collection); a typed value is a DuckDB
``VARCHAR``/``BIGINT``/``DOUBLE``/``BOOLEAN`` (NULL again for empty).  All of it runs
inside DuckDB: lambdas (``lambda x: ...``) over lists, no Python UDFs.
"""

from __future__ import annotations

import itertools
import re

EMPTY = "[]::JSON[]"
ERROR_MARK = "SOF-VIEW-ERROR: "
NUMERIC_JSON = "('BIGINT', 'UBIGINT', 'DOUBLE', 'HUGEINT')"

# FHIR primitive type -> FHIRPath family (SQL on FHIR "Column Types", FHIRPath §5 types).
STRING_TYPES = frozenset(
    {
        "string", "code", "id", "uri", "url", "canonical", "uuid", "oid", "markdown",
        "base64Binary", "xhtml", "date", "dateTime", "instant", "time", "String",
        "Date", "DateTime", "Time",
    }
)  # fmt: skip
INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt", "integer64", "Integer"})
DECIMAL_TYPES = frozenset({"decimal", "Decimal"})
BOOLEAN_TYPES = frozenset({"boolean", "Boolean"})

_SIMPLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?(\[[0-9]+\])?$")


def family(fhir_type: str) -> str:
    """FHIRPath family of a FHIR/FHIRPath type: string, integer, decimal, boolean or ""."""
    if fhir_type in STRING_TYPES:
        return "string"
    if fhir_type in INTEGER_TYPES:
        return "integer"
    if fhir_type in DECIMAL_TYPES:
        return "decimal"
    if fhir_type in BOOLEAN_TYPES:
        return "boolean"
    return ""


FAMILY_SQL = {"string": "VARCHAR", "integer": "BIGINT", "decimal": "DOUBLE", "boolean": "BOOLEAN"}


def sql_str(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def error_sql(message: str) -> str:
    """``error()`` with the marker :func:`cart_etl.extract.fhir.sof.run.run_view` translates."""
    return f"error({sql_str(ERROR_MARK + message)})"


class Names:
    """Fresh lambda-parameter names (DuckDB lambdas may nest; names must not clash)."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def fresh(self, prefix: str = "x") -> str:
        return f"_{prefix}{next(self._counter)}"


def is_simple(sql: str) -> bool:
    """True for a column or lambda variable (safe to repeat in generated SQL)."""
    return bool(_SIMPLE.match(sql))


def bind(names: Names, sql: str, body: str, var: str | None = None) -> str:
    """Evaluate ``sql`` once and use it as ``var`` inside ``body`` (``{v}`` placeholder).

    DuckDB has no ``LET``: ``list_transform([value], lambda v: body)[1]`` binds the value.
    """
    if is_simple(sql):
        return body.replace("{v}", sql)
    name = var or names.fresh("b")
    return f"(list_transform([{sql}], lambda {name}: {body.replace('{v}', name)}))[1]"


def json_path(name: str) -> str:
    """A JSONPath literal for one member name."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return f"$.{name}"
    return '$."' + name.replace('"', '\\"') + '"'


def chain_path(names: tuple[str, ...]) -> str:
    """A JSONPath literal for a chain of member names (``$.a.b``)."""
    return "$" + "".join(json_path(n)[1:] for n in names)


def step(node: str, name: str) -> str:
    """Members ``name`` of one JSON node as ``JSON[]`` (FHIRPath §3 "Path selection").

    A JSON array becomes its elements, a missing member or JSON null becomes nothing.
    ``node`` must be simple (a column or lambda variable): it is repeated.
    """
    p = json_path(name)
    return (
        f"(CASE coalesce(json_type({node}, '{p}'), 'NULL') WHEN 'NULL' THEN {EMPTY} "
        f"WHEN 'ARRAY' THEN list_filter(json_extract({node}, '{p}[*]'), "
        f"lambda _z: json_type(_z) <> 'NULL') "
        f"ELSE [json_extract({node}, '{p}')] END)"
    )


def step_value(value: str) -> str:
    """A member already extracted as one JSON value (``value``, SQL NULL when absent) as
    ``JSON[]``: the same collection :func:`step` gives (array elements without nulls, JSON
    null nothing).  ``value`` must be simple: it is repeated."""
    # json_extract writes minified JSON: the first character tells the type
    return (
        f"(CASE WHEN {value} IS NULL OR {value} = 'null' THEN {EMPTY} "
        f"WHEN starts_with({value}, '[') THEN list_filter(json_extract({value}, '$[*]'), "
        f"lambda _z: json_type(_z) <> 'NULL') "
        f"ELSE [{value}] END)"
    )


def json_to(x: str, fam: str) -> str:
    """Convert a JSON value to a typed value of FHIRPath family ``fam`` (NULL stays NULL)."""
    if fam == "string":
        return f"json_extract_string({x}, '$')"
    if fam in ("integer", "decimal", "boolean"):
        return f"TRY_CAST({x} AS {FAMILY_SQL[fam]})"
    return x


def sql_type_of(fam: str) -> str:
    return FAMILY_SQL.get(fam, "JSON")


def convert(x: str, sql_type: str) -> str:
    """Convert a JSON value to a column SQL type."""
    if sql_type == "VARCHAR":
        return f"json_extract_string({x}, '$')"
    if sql_type == "JSON":
        return x
    return f"TRY_CAST({x} AS {sql_type})"
