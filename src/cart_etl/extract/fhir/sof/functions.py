"""FHIRPath functions without lambda arguments (FHIRPath N1 §5), compiled to DuckDB SQL.

Existence (§5.1: ``empty``, ``count``, ``hasValue``, ``distinct``), subsetting (§5.3:
``first``, ``last``, ``tail``, ``skip``, ``take``), ``iif`` (§5.5), strings (§5.6),
conversions (§5.5 ``toString``/``toInteger``/``toDecimal``), ``not`` (§6.5) and the FHIR
``extension(url)`` (FHIR R4 "FHIRPath" functions) and the experimental ``join``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cart_etl.extract.fhir.sof import fhirpath as fp
from cart_etl.extract.fhir.sof import sqlbits as sb

if TYPE_CHECKING:
    from cart_etl.extract.fhir.sof.expr import Expr, ExprCompiler, Scope

# name -> (min args, max args, SQL on the string focus {s} and args {a0}, {a1}, result type)
_STRING_FNS: dict[str, tuple[int, int, str, str]] = {
    "startsWith": (1, 1, "starts_with({s}, {a0})", "boolean"),
    "endsWith": (1, 1, "ends_with({s}, {a0})", "boolean"),
    "contains": (1, 1, "contains({s}, {a0})", "boolean"),
    "lower": (0, 0, "lower({s})", "string"),
    "upper": (0, 0, "upper({s})", "string"),
    "length": (0, 0, "CAST(length({s}) AS BIGINT)", "integer"),
    "trim": (0, 0, "trim({s})", "string"),
    "indexOf": (1, 1, "CAST(instr({s}, {a0}) - 1 AS BIGINT)", "integer"),
    "matches": (1, 1, "regexp_matches({s}, {a0})", "boolean"),
    "replace": (2, 2, "replace({s}, {a0}, {a1})", "string"),
    "toString": (0, 0, "{s}", "string"),
}

SUPPORTED = sorted(
    {
        "where", "select", "exists", "all", "ofType", "getResourceKey", "getReferenceKey",
        "lowBoundary", "highBoundary", "empty", "count", "hasValue", "first", "last", "tail",
        "skip", "take", "not", "iif", "extension", "join", "distinct", "substring",
        "toInteger", "toDecimal", "is", "as", *_STRING_FNS,
    }
)  # fmt: skip


def _nargs(c: ExprCompiler, name: str, args: tuple[fp.Node, ...], lo: int, hi: int) -> None:
    if not lo <= len(args) <= hi:
        raise c.fail(f"{name}() takes {lo}..{hi} arguments, got {len(args)}")


def simple_function(
    c: ExprCompiler, name: str, target: Expr, args: tuple[fp.Node, ...], scope: Scope
) -> Expr:
    """Compile ``target.name(args)``."""
    from cart_etl.extract.fhir.sof.expr import Expr

    def arg(i: int, fam: str) -> str:
        return c.val(c.expr(args[i], scope), fam)

    if name in (
        "empty",
        "count",
        "hasValue",
        "first",
        "last",
        "tail",
        "not",
        "distinct",
        "toInteger",
        "toDecimal",
    ):
        _nargs(c, name, args, 0, 0)
    if name in ("empty", "hasValue"):
        test = f"len({target.sql}) = 0" if target.kind == "coll" else f"{target.sql} IS NULL"
        return Expr("val", f"({test})" if name == "empty" else f"(NOT ({test}))", "boolean")
    if name == "count":
        return Expr("val", f"CAST(len({c.coll(target)}) AS BIGINT)", "integer")
    if name in ("first", "last"):
        if target.kind != "coll":
            return target
        item = f"({target.sql})[{1 if name == 'first' else -1}]"
        if target.fast is not None:  # one item or none: it is first and last
            item = f"(CASE WHEN {target.fast.scalar()} THEN {target.fast.value} ELSE {item} END)"
        return Expr("node", item, target.type)
    if name == "tail":
        return Expr("coll", f"({c.coll(target)})[2:]", target.type)
    if name in ("skip", "take"):
        _nargs(c, name, args, 1, 1)
        k = arg(0, "integer")
        sl = f"[greatest({k}, 0) + 1:]" if name == "skip" else f"[:greatest({k}, 0)]"
        return Expr("coll", f"({c.coll(target)}){sl}", target.type)
    if name == "distinct":
        return Expr("coll", f"list_distinct({c.coll(target)})", target.type)
    if name == "not":
        return Expr("val", f"(NOT {c.boolean(target)})", "boolean")
    if name == "iif":
        _nargs(c, name, args, 2, 3)
        cond = c.boolean(c.expr(args[0], scope))
        yes = c.coll(c.expr(args[1], scope))
        no = c.coll(c.expr(args[2], scope)) if len(args) == 3 else sb.EMPTY
        return Expr("coll", f"(CASE WHEN coalesce({cond}, false) THEN {yes} ELSE {no} END)")
    if name == "extension":
        _nargs(c, name, args, 1, 1)
        url = arg(0, "string")
        ext = c.member(target, "extension")
        x = c.names.fresh()
        return Expr(
            "coll",
            f"list_filter({ext.sql}, lambda {x}: json_extract_string({x}, '$.url') = {url})",
            "Extension",
        )
    if name == "join":
        _nargs(c, name, args, 0, 1)
        sep = arg(0, "string") if args else "''"
        x = c.names.fresh()
        items = f"list_transform({c.coll(target)}, lambda {x}: json_extract_string({x}, '$'))"
        return Expr("val", f"array_to_string({items}, {sep})", "string")
    if name in ("toInteger", "toDecimal"):
        fam = "integer" if name == "toInteger" else "decimal"
        s = c.val(target, "string") if target.fam != fam else target.sql
        return Expr("val", f"TRY_CAST({s} AS {sb.sql_type_of(fam)})", fam)
    if name == "substring":
        _nargs(c, name, args, 1, 2)
        s = c.val(target, "string")
        start = arg(0, "integer")
        length = f", {arg(1, 'integer')}" if len(args) == 2 else ""
        return Expr(
            "val",
            f"(CASE WHEN {start} >= 0 AND {start} < length({s}) THEN substr({s}, "
            f"{start} + 1{length}) END)",
            "string",
        )
    if name in _STRING_FNS:
        lo, hi, template, rtype = _STRING_FNS[name]
        _nargs(c, name, args, lo, hi)
        values = {f"a{i}": arg(i, "string") for i in range(len(args))}
        s = c.val(target, "string")
        return Expr("val", template.format(s=s, **values), rtype)
    raise c.fail(f"FHIRPath function {name}() is not supported (supported: {', '.join(SUPPORTED)})")
