"""ViewDefinition structure checks, column order and constants.

Follows SQL on FHIR v2 *ViewDefinition* (the FHIR StructureDefinition and its invariants:
``resource`` and ``select`` are required, column ``name`` matches
``^[A-Za-z][A-Za-z0-9_]*$``, one of ``forEach``/``forEachOrNull``/``repeat`` at most),
"Processing Algorithm" ``ValidateColumns`` (unique names; every ``unionAll`` branch has the
same column names in the same order), "Column Ordering" (a select's own columns, then its
nested selects, then its unionAll) and "Using Constants" (``constant[].value[x]``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cart_etl.extract.fhir.sof import fhirpath as fp
from cart_etl.extract.fhir.sof import sqlbits as sb
from cart_etl.extract.fhir.sof.errors import ViewDefinitionError

if TYPE_CHECKING:
    from cart_etl.extract.fhir.sof.expr import Expr

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_SEL_KEYS = frozenset({"column", "select", "unionAll", "forEach", "forEachOrNull", "repeat"})
_COL_KEYS = frozenset(
    {"path", "name", "collection", "description", "type", "tag", "tags", "id", "extension"}
)


@dataclass(frozen=True)
class ViewColumn:
    """One output column: ``loc`` is the select it belongs to (``.select[0].unionAll[1]``)."""

    name: str
    path: str
    type: str
    collection: bool
    loc: str
    extra: bool = False  # a column of unionAll[1:] (same name as one of unionAll[0])

    @property
    def sql_type(self) -> str:
        """DuckDB type from the declared ``type`` ("" when untyped: inferred later)."""
        if not self.type:
            return ""
        fam = sb.family(self.type)
        base = sb.FAMILY_SQL[fam] if fam else "JSON"
        return base + "[]" if self.collection else base


def view_name(view: Mapping[str, Any]) -> str:
    return str(view.get("name") or view.get("id") or "<unnamed>")


def column_sql_type(col: ViewColumn, e: Expr) -> str:
    """SQL type of an untyped column from its compiled expression (VARCHAR by default)."""
    base = sb.FAMILY_SQL.get(e.fam, "VARCHAR")
    return base + "[]" if col.collection else base


def _fail(vname: str, loc: str, message: str) -> ViewDefinitionError:
    return ViewDefinitionError(f"view {vname!r}: {loc or 'view'}: {message}")


def _check_path(vname: str, loc: str, path: object) -> str:
    if not isinstance(path, str):
        raise _fail(vname, loc, f"path must be a FHIRPath string, not {path!r}")
    try:
        fp.parse(path)
    except fp.FhirPathSyntaxError as exc:
        raise _fail(vname, loc, f"path {path!r}: {exc}") from exc
    return path


def _columns(vname: str, sel: object, loc: str, out: list[ViewColumn]) -> list[ViewColumn]:
    """``ValidateColumns(S, C)``: this select's columns in output order."""
    if not isinstance(sel, Mapping):
        raise _fail(vname, loc, f"a select must be an object, not {sel!r}")
    unknown = set(sel) - _SEL_KEYS
    if unknown:
        raise _fail(vname, loc, f"unknown select keys {sorted(unknown)}")
    iters = [k for k in ("forEach", "forEachOrNull", "repeat") if k in sel]
    if len(iters) > 1:
        raise _fail(vname, loc, f"only one of forEach/forEachOrNull/repeat is allowed, got {iters}")
    for k in ("forEach", "forEachOrNull"):
        if k in sel:
            _check_path(vname, f"{loc}.{k}", sel[k])
    if "repeat" in sel:
        rep = sel["repeat"]
        if not isinstance(rep, list) or not rep:
            raise _fail(
                vname, f"{loc}.repeat", "repeat must be a non-empty list of FHIRPath strings"
            )
        for i, p in enumerate(rep):
            _check_path(vname, f"{loc}.repeat[{i}]", p)
    mine: list[ViewColumn] = []

    def add(col: ViewColumn) -> None:
        taken = {c.name.lower() for c in out} | {c.name.lower() for c in mine}
        if col.name.lower() in taken:
            raise _fail(vname, col.loc, f"column {col.name!r} is already defined")
        mine.append(col)

    columns = sel.get("column")
    if columns is not None:
        if not isinstance(columns, list) or not columns:
            raise _fail(vname, loc, "column must be a non-empty list")
        for i, c in enumerate(columns):
            cloc = f"{loc}.column[{i}]"
            if not isinstance(c, Mapping):
                raise _fail(vname, cloc, f"a column must be an object, not {c!r}")
            if set(c) - _COL_KEYS:
                raise _fail(vname, cloc, f"unknown column keys {sorted(set(c) - _COL_KEYS)}")
            path = _check_path(vname, cloc, c.get("path"))
            name = c.get("name", path if _NAME.match(path) else None)
            if not isinstance(name, str) or not _NAME.match(name):
                raise _fail(vname, cloc, f"column name {name!r} must match {_NAME.pattern}")
            collection = c.get("collection", False)
            if not isinstance(collection, bool):
                raise _fail(vname, cloc, "collection must be true or false")
            ctype = c.get("type", "")
            if not isinstance(ctype, str):
                raise _fail(vname, cloc, "type must be a string")
            add(ViewColumn(name, path, ctype, collection, loc))
    for key in ("select", "unionAll"):
        if key in sel and (not isinstance(sel[key], list) or not sel[key]):
            raise _fail(vname, f"{loc}.{key}", f"{key} must be a non-empty list")
    for i, child in enumerate(sel.get("select") or []):
        for col in _columns(vname, child, f"{loc}.select[{i}]", out + mine):
            if col.extra:
                mine.append(col)
            else:
                add(col)
    if sel.get("unionAll"):
        branches = [
            _columns(vname, b, f"{loc}.unionAll[{i}]", out + mine)
            for i, b in enumerate(sel["unionAll"])
        ]
        first = [c.name for c in branches[0] if not c.extra]
        for i, b in enumerate(branches[1:], start=1):
            if [c.name for c in b if not c.extra] != first:
                raise _fail(
                    vname,
                    f"{loc}.unionAll[{i}]",
                    f"columns {[c.name for c in b]} differ from unionAll[0] {first}",
                )
        for col in branches[0]:
            if col.extra:
                mine.append(col)
            else:
                add(col)
        for b in branches[1:]:
            mine.extend(replace(c, extra=True) for c in b)  # compiled too, same names
    return mine


def check_view(view: Mapping[str, Any], vname: str | None = None) -> list[ViewColumn]:
    """Validate ``view``; every column of every select (all unionAll branches included)."""
    vname = vname or view_name(view)
    resource = view.get("resource")
    if not isinstance(resource, str) or not resource:
        raise _fail(vname, "resource", "the view needs a resource type")
    select = view.get("select")
    if not isinstance(select, list) or not select:
        raise _fail(vname, "select", "the view needs a non-empty select list")
    where = view.get("where") or []
    if not isinstance(where, list):
        raise _fail(vname, "where", "where must be a list")
    for i, w in enumerate(where):
        if not isinstance(w, Mapping):
            raise _fail(vname, f"where[{i}]", "a where must be an object with a path")
        _check_path(vname, f"where[{i}]", w.get("path"))
    constant_exprs(view, vname)
    return _columns(vname, {"select": select}, "", [])


def output_columns(view: Mapping[str, Any]) -> list[ViewColumn]:
    """The view's output columns in order (the first unionAll branch stands for all)."""
    cols = check_view(view)
    seen: set[str] = set()
    out = []
    for c in cols:
        if not c.extra and c.name not in seen:
            seen.add(c.name)
            out.append(c)
    return out


def view_columns(view: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """``(name, FHIR type or "", collection)`` of each output column, in output order."""
    return [(c.name, c.type, c.collection) for c in output_columns(view)]


def constant_exprs(view: Mapping[str, Any], vname: str) -> dict[str, Expr]:
    """``%name`` substitutions of ``view.constant`` as typed SQL values."""
    from cart_etl.extract.fhir.sof.expr import Expr

    out: dict[str, Expr] = {}
    consts = view.get("constant") or []
    if not isinstance(consts, list):
        raise _fail(vname, "constant", "constant must be a list")
    for i, c in enumerate(consts):
        loc = f"constant[{i}]"
        if (
            not isinstance(c, Mapping)
            or not isinstance(c.get("name"), str)
            or not _NAME.match(c["name"])
        ):
            raise _fail(vname, loc, "a constant needs a name matching " + _NAME.pattern)
        values = [(k, v) for k, v in c.items() if k.startswith("value")]
        if len(values) != 1:
            raise _fail(vname, loc, f"constant {c['name']!r} needs exactly one value[x]")
        key, value = values[0]
        fhir_type = key[5:6].lower() + key[6:]
        fam = sb.family(fhir_type)
        if fam == "boolean" and isinstance(value, bool):
            out[c["name"]] = Expr("val", "true" if value else "false", fhir_type)
        elif (
            fam in ("integer", "decimal")
            and isinstance(value, int | float | str)
            and not isinstance(value, bool)
        ):
            try:
                num = int(value) if fam == "integer" else float(value)
            except ValueError as exc:
                raise _fail(vname, loc, f"{key} {value!r} is not a number") from exc
            out[c["name"]] = Expr("val", f"CAST({num!r} AS {sb.FAMILY_SQL[fam]})", fhir_type)
        elif fam == "string" and isinstance(value, str):
            out[c["name"]] = Expr("val", sb.sql_str(value), fhir_type)
        else:
            raise _fail(vname, loc, f"unsupported constant {key}={value!r}")
    return out
