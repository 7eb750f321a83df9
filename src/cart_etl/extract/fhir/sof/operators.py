"""FHIRPath operators (FHIRPath N1 §6) compiled to DuckDB SQL.

Equality (§6.1) compares collections item by item and is empty when either side is
empty; comparisons (§6.2) and math (§6.6) use singleton evaluation; Boolean logic (§6.5)
is three-valued, which SQL's ``AND``/``OR``/``NOT`` already are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cart_etl.extract.fhir.sof import fhirpath as fp
from cart_etl.extract.fhir.sof import sqlbits as sb

if TYPE_CHECKING:
    from cart_etl.extract.fhir.sof.expr import Expr, ExprCompiler, Scope

_CMP = {"<", ">", "<=", ">="}
_MATH = {"+", "-", "*", "/", "div", "mod"}


def json_eq(x: str, y: str) -> str:
    """Equality of two JSON items (numbers by value, everything else by JSON text)."""
    return (
        f"(CASE WHEN json_type({x}) IN {sb.NUMERIC_JSON} AND json_type({y}) IN {sb.NUMERIC_JSON} "
        f"THEN TRY_CAST({x} AS DOUBLE) = TRY_CAST({y} AS DOUBLE) "
        f"ELSE CAST({x} AS VARCHAR) = CAST({y} AS VARCHAR) END)"
    )


def _val_json_eq(x: str, v: str, fam: str) -> str:
    return f"({sb.json_to(x, fam or 'string')} = {v})"


def _val_val(a: Expr, b: Expr, op: str) -> str:
    fa, fb = a.fam, b.fam
    nums = ("integer", "decimal")
    if fa == fb or (fa in nums and fb in nums):
        return f"({a.sql} {op} {b.sql})"
    return f"(CAST({a.sql} AS VARCHAR) {op} CAST({b.sql} AS VARCHAR))"


def equals(c: ExprCompiler, a: Expr, b: Expr) -> str:
    """FHIRPath ``=``: empty if either side is empty, else item-wise equality."""
    if a.kind == "val" and b.kind == "val":
        return _val_val(a, b, "=")
    if a.kind == "val" or b.kind == "val":
        v, other = (a, b) if a.kind == "val" else (b, a)
        fam = v.fam or "string"
        if other.kind == "node":
            return sb.bind(c.names, other.sql, _val_json_eq("{v}", v.sql, fam))
        body = (
            f"(CASE WHEN len({{v}}) = 0 OR {v.sql} IS NULL THEN NULL WHEN len({{v}}) <> "
            f"1 THEN false "
            f"ELSE {_val_json_eq('{v}[1]', v.sql, fam)} END)"
        )
        return sb.bind(c.names, other.sql, body)
    if a.kind == "node" and b.kind == "node":
        return sb.bind(c.names, f"[{a.sql}, {b.sql}]", json_eq("{v}[1]", "{v}[2]"))
    x, i = c.names.fresh(), c.names.fresh()
    body = (
        "(CASE WHEN len({v}[1]) = 0 OR len({v}[2]) = 0 THEN NULL WHEN len({v}[1]) <> len({v}[2]) "
        f"THEN false ELSE len(list_filter(list_transform({{v}}[1], lambda {x}, {i}: "
        f"{json_eq(x, '{v}[2][' + i + ']')}), lambda {x}: NOT coalesce({x}, false))) = 0 END)"
    )
    return sb.bind(c.names, f"[{c.coll(a)}, {c.coll(b)}]", body)


def compare(c: ExprCompiler, a: Expr, b: Expr, op: str) -> str:
    """FHIRPath ``<``/``>``/``<=``/``>=`` on singletons (numbers, else strings)."""
    sa, sb_ = c.single(a), c.single(b)
    if sa.kind == "val" and sb_.kind == "val":
        return _val_val(sa, sb_, op)
    if sa.kind == "val" or sb_.kind == "val":
        fam = sa.fam if sa.kind == "val" else sb_.fam
        return f"({c.val(sa, fam)} {op} {c.val(sb_, fam)})"
    x, y = sa.sql, sb_.sql
    body = (
        "(CASE WHEN json_type({v}[1]) IN "
        + sb.NUMERIC_JSON
        + " AND json_type({v}[2]) IN "
        + sb.NUMERIC_JSON
        + " THEN TRY_CAST({v}[1] AS DOUBLE) "
        + op
        + " TRY_CAST({v}[2] AS DOUBLE) "
        "ELSE json_extract_string({v}[1], '$') " + op + " json_extract_string({v}[2], '$') END)"
    )
    return sb.bind(c.names, f"[{x}, {y}]", body)


def _is_string(e: Expr) -> bool:
    return e.fam == "string"


def math(c: ExprCompiler, a: Expr, b: Expr, op: str) -> Expr:
    """FHIRPath math (§6.6); ``+`` on strings concatenates."""
    from cart_etl.extract.fhir.sof.expr import Expr

    if op == "+" and (_is_string(a) or _is_string(b)):
        return Expr("val", f"({c.val(a, 'string')} || {c.val(b, 'string')})", "string")
    fam = "integer" if a.fam == "integer" and b.fam == "integer" and op not in ("/",) else "decimal"
    x, y = c.val(a, fam), c.val(b, fam)
    if op == "/":
        return Expr("val", f"(CAST({x} AS DOUBLE) / nullif(CAST({y} AS DOUBLE), 0))", "decimal")
    if op == "div":
        return Expr("val", f"CAST(trunc({x} / nullif({y}, 0)) AS BIGINT)", "integer")
    if op == "mod":
        return Expr("val", f"({x} % nullif({y}, 0))", fam)
    return Expr("val", f"({x} {op} {y})", fam)


def binary(c: ExprCompiler, n: fp.Binary, scope: Scope) -> Expr:
    """Compile an infix operator."""
    from cart_etl.extract.fhir.sof.expr import Expr

    op = n.op
    if op in ("is", "as"):
        call = fp.Call(n.left, "ofType", (n.right,))
        typed = c.expr(call, scope)
        if op == "as":
            return typed
        left = c.single(c.expr(n.left, scope))
        if left.kind == "val":
            return Expr(
                "val",
                f"(CASE WHEN {left.sql} IS NOT NULL THEN "
                f"{'true' if left.type == getattr(n.right, 'name', '') else 'false'} END)",
                "boolean",
            )
        return Expr(
            "val", f"(CASE WHEN {left.sql} IS NOT NULL THEN len({typed.sql}) > 0 END)", "boolean"
        )
    a, b = c.expr(n.left, scope), c.expr(n.right, scope)
    if op in ("and", "or"):
        return Expr("val", f"({c.boolean(a)} {op.upper()} {c.boolean(b)})", "boolean")
    if op == "xor":
        return Expr("val", f"({c.boolean(a)} <> {c.boolean(b)})", "boolean")
    if op == "implies":
        return Expr("val", f"((NOT {c.boolean(a)}) OR {c.boolean(b)})", "boolean")
    if op == "=":
        return Expr("val", equals(c, a, b), "boolean")
    if op == "!=":
        return Expr("val", f"(NOT {equals(c, a, b)})", "boolean")
    if op in ("~", "!~"):
        la, lb = (
            f"lower(CAST({c.val(a, '')} AS VARCHAR))",
            f"lower(CAST({c.val(b, '')} AS VARCHAR))",
        )
        eq = f"coalesce({la} = {lb}, {la} IS NULL AND {lb} IS NULL)"
        return Expr("val", eq if op == "~" else f"(NOT {eq})", "boolean")
    if op in _CMP:
        return Expr("val", compare(c, a, b, op), "boolean")
    if op in _MATH:
        return math(c, a, b, op)
    if op == "&":
        return Expr(
            "val",
            f"(coalesce({c.val(a, 'string')}, '') || coalesce({c.val(b, 'string')}, ''))",
            "string",
        )
    if op == "|":
        ca, cb = c.coll(a), c.coll(b)
        p, y = c.names.fresh(), c.names.fresh()
        return Expr(
            "coll",
            f"(list_transform([{ca}], lambda {p}: list_concat({p}, list_filter({cb}, "
            f"lambda {y}: NOT list_contains({p}, {y})))))[1]",
        )
    if op in ("in", "contains"):
        item, coll = (a, b) if op == "in" else (b, a)
        s = c.single(item)
        y = c.names.fresh()
        if s.kind == "val":
            test = _val_json_eq(y, s.sql, s.fam)
            nul = s.sql
        else:
            test = json_eq(y, s.sql)
            nul = s.sql
        return Expr(
            "val",
            f"(CASE WHEN {nul} IS NOT NULL THEN len(list_filter({c.coll(coll)}, lambda "
            f"{y}: coalesce({test}, false))) > 0 END)",
            "boolean",
        )
    raise c.fail(f"operator {op!r} is not supported")
