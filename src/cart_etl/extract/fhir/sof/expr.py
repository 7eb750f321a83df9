"""FHIRPath expression tree -> DuckDB SQL expression.

Semantics follow FHIRPath N1 (https://hl7.org/fhirpath/): §4 collections and empty
propagation, §5 functions, §6 operators (three-valued ``and``/``or``/``not``, equality of
collections, singleton evaluation); plus the SQL on FHIR v2 functions
``getResourceKey()``/``getReferenceKey([type])`` (ViewDefinition "Required Additional
Functions") and the ``%rowIndex`` environment variable ("Environment Variables").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from cart_etl.extract.fhir.sof import fhirpath as fp
from cart_etl.extract.fhir.sof import sqlbits as sb
from cart_etl.extract.fhir.sof.boundary import boundary_sql
from cart_etl.extract.fhir.sof.errors import ViewDefinitionError

REF_PATTERN = "(?:^|/)([A-Z][A-Za-z]+)/([^/]+)$"


@dataclass(frozen=True)
class Fast:
    """The fast path of a member chain ``names`` read from a projected focus: when ``cond``
    (SQL) holds, the collection is ``sb.step_value(value)``, ``value`` being the JSON the
    focus's projection extracted at that path (no array on the way: checked at run time)."""

    focus: str
    names: tuple[str, ...]
    cond: str
    value: str
    general: str  # the same collection without the fast path (always right, slower)

    def scalar(self) -> str:
        """SQL: the collection is the single non-array item ``value`` (or empty)."""
        v = self.value
        ok = f"({v} IS NULL OR NOT (starts_with({v}, '[') OR {v} = 'null'))"
        return ok if self.cond == "true" else f"({self.cond} AND {ok})"


@dataclass(frozen=True)
class Expr:
    """A compiled expression: ``kind`` is ``node`` (JSON or NULL), ``coll`` (JSON[]) or
    ``val`` (typed SQL value or NULL); ``type`` is the FHIR/FHIRPath type when known;
    ``fast`` a cheaper equivalent of a ``coll`` for the usual shape of the data."""

    kind: str
    sql: str
    type: str = ""
    fast: Fast | None = None

    @property
    def fam(self) -> str:
        return sb.family(self.type)


class Projection:
    """Member chains of one focus node (the resource, a ``forEach`` item) read with one
    multi-path ``json_extract``, so the focus is parsed once: chain -> SQL of its value."""

    def __init__(self, column: Callable[[int], str]) -> None:
        self.column = column
        self.paths: dict[tuple[str, ...], str] = {}

    def get(self, names: tuple[str, ...]) -> str:
        col = self.paths.get(names)
        if col is None:
            col = self.paths[names] = self.column(len(self.paths) + 1)
        return col

    def json_paths(self) -> str:
        """``[...]`` of the JSONPath literals, in column order."""
        return "[" + ", ".join(sb.sql_str(sb.chain_path(n)) for n in self.paths) + "]"


class SharedProjection(Projection):
    """The root projection of a pre-parsed source: chain ``n`` of ``shared`` (chain ->
    its 1-based position, a registry common to all views of one resource type) is
    ``_src._rp[n]``, the list one multi-path ``json_extract`` made for them all."""

    def __init__(self, shared: dict[tuple[str, ...], int]) -> None:
        super().__init__(lambda i: "")
        self.shared = shared

    def get(self, names: tuple[str, ...]) -> str:
        col = self.paths.get(names)
        if col is None:
            pos = self.shared.get(names)
            if pos is None:
                pos = self.shared[names] = len(self.shared) + 1
            col = self.paths[names] = f"_src._rp[{pos}]"
        return col


@dataclass(frozen=True)
class Scope:
    """Evaluation context: ``focus`` is the SQL of ``$this`` (a simple JSON variable)."""

    focus: str
    row_index: str
    top: bool


class ExprCompiler:
    """Compiles FHIRPath trees for one view (its constants, root and resource key)."""

    def __init__(
        self,
        names: sb.Names,
        *,
        root: str,
        key_sql: str,
        constants: dict[str, Expr],
        resource: str,
        where: str,
    ) -> None:
        self.names = names
        self.root = root
        self.key_sql = key_sql
        self.constants = constants
        self.resource = resource
        self.where = where  # "view 'x': select[0].column[1]" for messages
        self.path = ""
        self.lookup_refs = False
        # focus SQL -> its projection (the view compiler adds the root and forEach items)
        self.proj: dict[str, Projection] = {}

    # -- helpers -----------------------------------------------------------------------
    def fail(self, message: str) -> ViewDefinitionError:
        return ViewDefinitionError(f"{self.where}: path {self.path!r}: {message}")

    def rt_error(self, message: str) -> str:
        return sb.error_sql(f"{self.where}: path {self.path!r}: {message}")

    def coll(self, e: Expr) -> str:
        """Any expression as JSON[]."""
        if e.kind == "coll":
            return e.sql
        if e.kind == "node":
            return sb.bind(
                self.names, e.sql, f"(CASE WHEN {{v}} IS NULL THEN {sb.EMPTY} ELSE [{{v}}] END)"
            )
        return sb.bind(
            self.names,
            e.sql,
            f"(CASE WHEN {{v}} IS NULL THEN {sb.EMPTY} ELSE [to_json({{v}})] END)",
        )

    def single(self, e: Expr) -> Expr:
        """Singleton evaluation (FHIRPath §4.4): a node or a value; >1 item is an error."""
        if e.kind != "coll":
            return e
        body = (
            f"(CASE WHEN len({{v}}) > 1 THEN "
            f"{self.rt_error('expected a single value')} ELSE {{v}}[1] END)"
        )
        return Expr("node", sb.bind(self.names, e.sql, body), e.type)

    def val(self, e: Expr, fam: str) -> str:
        """Singleton as a typed SQL value of FHIRPath family ``fam``."""
        s = self.single(e)
        if s.kind == "val":
            if fam and s.fam != fam:
                return f"TRY_CAST({s.sql} AS {sb.sql_type_of(fam)})"
            return s.sql
        return sb.json_to(s.sql, fam or s.fam or "string")

    def boolean(self, e: Expr) -> str:
        """Singleton as Boolean (FHIRPath §4.5: a non-Boolean single item is true)."""
        if e.kind == "val":
            if e.fam == "boolean":
                return e.sql
            return f"(CASE WHEN {e.sql} IS NULL THEN NULL ELSE true END)"
        s = self.single(e)
        body = (
            "(CASE WHEN {v} IS NULL THEN NULL WHEN json_type({v}) = 'BOOLEAN' THEN "
            "{v}::BOOLEAN ELSE true END)"
        )
        return sb.bind(self.names, s.sql, body)

    def lam(
        self, c: str, scope: Scope, fn: Callable[[Scope], str], *, index: bool = False
    ) -> tuple[str, str]:
        """A lambda over the elements of ``c``: returns (params, body)."""
        x = self.names.fresh()
        body = fn(replace(scope, focus=x, top=False))
        return (f"{x}, _i{x}" if index else x), body

    # -- entry -------------------------------------------------------------------------
    def compile(self, src: str, scope: Scope, where: str) -> Expr:
        self.where, self.path = where, src
        try:
            tree = fp.parse(src)
        except fp.FhirPathSyntaxError as exc:
            raise self.fail(str(exc)) from exc
        return self.expr(tree, scope)

    def expr(self, n: fp.Node, scope: Scope) -> Expr:
        if isinstance(n, fp.Literal):
            return self.literal(n)
        if isinstance(n, fp.This):
            return Expr("node", scope.focus)
        if isinstance(n, fp.Ident):
            if scope.top and n.name == self.resource:
                return Expr("node", scope.focus)
            return self.member(Expr("node", scope.focus), n.name)
        if isinstance(n, fp.Var):
            return self.var(n.name, scope)
        if isinstance(n, fp.Member):
            return self.member(self.expr(n.target, scope), n.name)
        if isinstance(n, fp.Index):
            return self.index(self.expr(n.target, scope), self.expr(n.index, scope))
        if isinstance(n, fp.Call):
            return self.call(n, scope)
        if isinstance(n, fp.Unary):
            inner = self.expr(n.operand, scope)
            fam = inner.fam if inner.fam in ("integer", "decimal") else "decimal"
            v = self.val(inner, fam)
            return Expr("val", f"({v})" if n.op == "+" else f"(-({v}))", fam)
        from cart_etl.extract.fhir.sof.operators import binary

        return binary(self, n, scope)

    def literal(self, n: fp.Literal) -> Expr:
        if n.type == "empty":
            return Expr("coll", sb.EMPTY)
        if n.type == "boolean":
            return Expr("val", "true" if n.value else "false", "boolean")
        if n.type == "integer":
            return Expr("val", f"CAST({n.value} AS BIGINT)", "integer")
        if n.type == "decimal":
            return Expr("val", f"CAST({n.value!r} AS DOUBLE)", "decimal")
        return Expr("val", sb.sql_str(str(n.value)), n.type)

    def var(self, name: str, scope: Scope) -> Expr:
        if name == "rowIndex":
            return Expr("val", scope.row_index, "integer")
        if name in ("resource", "rootResource", "context"):
            return Expr("node", self.root)
        if name in self.constants:
            return self.constants[name]
        raise self.fail(f"undefined constant %{name}")

    def member(self, target: Expr, name: str) -> Expr:
        if target.kind == "val":
            return Expr("coll", sb.EMPTY)
        if target.kind == "node" and target.sql in self.proj:
            v = self.proj[target.sql].get((name,))
            sv = sb.step_value(v)
            return Expr("coll", sv, fast=Fast(target.sql, (name,), "true", v, sv))
        f = target.fast
        if f is not None and target.kind == "coll":
            # fast: nothing on the way is an array (one projected value); an array parent:
            # one wildcard extraction; anything else: the general flatten below
            names = (*f.names, name)
            v = self.proj[f.focus].get(names)
            arr = f"starts_with({f.value}, '[')"
            cond = f"NOT coalesce({arr}, false)"
            cond = cond if f.cond == "true" else f"({f.cond} AND {cond})"
            w = self.names.fresh("w")
            wild = (
                f"flatten(list_transform(json_extract({f.value}, "
                f"{sb.sql_str('$[*]' + sb.json_path(name)[1:])}), lambda {w}: "
                f"{sb.step_value(w)}))"
            )
            when_arr = arr if f.cond == "true" else f"{f.cond} AND {arr}"
            x = self.names.fresh()
            general = f"flatten(list_transform({f.general}, lambda {x}: {sb.step(x, name)}))"
            sql = (
                f"(CASE WHEN {cond} THEN {sb.step_value(v)} WHEN {when_arr} THEN {wild} "
                f"ELSE {general} END)"
            )
            return Expr("coll", sql, fast=Fast(f.focus, names, cond, v, general))
        if target.kind == "node":
            return Expr("coll", sb.bind(self.names, target.sql, sb.step("{v}", name)))
        x = self.names.fresh()
        return Expr(
            "coll", f"flatten(list_transform({target.sql}, lambda {x}: {sb.step(x, name)}))"
        )

    def index(self, target: Expr, idx: Expr) -> Expr:
        i = self.val(idx, "integer")
        c = self.coll(target)
        return Expr("node", f"(CASE WHEN ({i}) >= 0 THEN ({c})[({i}) + 1] END)", target.type)

    def filter(self, target: Expr, scope: Scope, crit: Callable[[Scope], str]) -> Expr:
        params, body = self.lam(self.coll(target), scope, crit)
        return Expr(
            "coll",
            f"list_filter({self.coll(target)}, lambda {params}: coalesce({body}, false))",
            target.type,
        )

    def type_test(self, x: str, type_name: str) -> str:
        """Does JSON value ``x`` have type ``type_name`` (FHIRPath ``is``/``ofType``)?"""
        fam = sb.family(type_name)
        if type_name == "integer64":
            return f"json_type({x}) IN ('BIGINT', 'UBIGINT', 'VARCHAR')"
        if fam == "string":
            return f"json_type({x}) = 'VARCHAR'"
        if fam == "integer":
            return f"json_type({x}) IN ('BIGINT', 'UBIGINT')"
        if fam == "decimal":
            return f"json_type({x}) IN {sb.NUMERIC_JSON}"
        if fam == "boolean":
            return f"json_type({x}) = 'BOOLEAN'"
        rt = sb.sql_str(type_name)
        return (
            f"(json_type({x}) = 'OBJECT' AND coalesce(json_extract_string({x}, "
            f"'$.resourceType') = {rt}, "
            f"json_type({x}, '$.resourceType') IS NULL))"
        )

    def of_type(self, n: fp.Call, scope: Scope) -> Expr:
        type_name = self.type_arg(n)
        target = n.target
        if isinstance(target, fp.Ident | fp.Member) and not (
            isinstance(target, fp.Ident) and scope.top and target.name == self.resource
        ):
            parent = (
                Expr("node", scope.focus)
                if isinstance(target, fp.Ident)
                else self.expr(target.target, scope)
            )
            choice = self.member(parent, target.name + type_name[0].upper() + type_name[1:])
            plain = self.member(parent, target.name)
        else:
            choice = Expr("coll", sb.EMPTY)
            plain = self.expr(target, scope) if target is not None else Expr("node", scope.focus)
        x = self.names.fresh()
        kept = f"list_filter({self.coll(plain)}, lambda {x}: {self.type_test(x, type_name)})"
        sql = kept if choice.sql == sb.EMPTY else f"list_concat({choice.sql}, {kept})"
        cf, pf = choice.fast, plain.fast
        if cf is not None and pf is not None and pf.cond == cf.cond:
            # no member of the plain name (the usual case): just the choice element
            cond = f"{pf.value} IS NULL"
            cond = cond if cf.cond == "true" else f"({cf.cond} AND {cond})"
            y = self.names.fresh()
            general = (
                f"list_concat({cf.general}, list_filter({pf.general}, lambda {y}: "
                f"{self.type_test(y, type_name)}))"
            )
            fast = Fast(cf.focus, cf.names, cond, cf.value, general)
            sql = f"(CASE WHEN {cond} THEN {sb.step_value(cf.value)} ELSE {general} END)"
            return Expr("coll", sql, type_name, fast)
        return Expr("coll", sql, type_name)

    def type_arg(self, n: fp.Call) -> str:
        if len(n.args) != 1:
            raise self.fail(f"{n.name}() takes one type argument")
        arg = n.args[0]
        if isinstance(arg, fp.Ident):
            return arg.name
        if isinstance(arg, fp.Member):
            return arg.name
        raise self.fail(f"{n.name}() needs a type name")

    def reference_parts(self, ref: str) -> str:
        """``STRUCT(t, i)``: type and id of a literal reference (``''`` when none), as
        :meth:`reference_key` reads them; ``ref`` must be simple."""
        r = (
            f"(CASE WHEN contains({ref}, '/_history/') "
            f"THEN regexp_replace({ref}, '/_history/.*$', '') ELSE {ref} END)"
        )
        return f"regexp_extract({r}, '{REF_PATTERN}', ['t', 'i'])"

    def reference_key(self, ref: str, type_name: str | None) -> str:
        """Key of a literal reference ``[.../]Type/id[/_history/v]`` (VARCHAR, NULL if none)."""
        r = f"regexp_replace({ref}, '/_history/.*$', '')"
        key = f"nullif(regexp_extract({r}, '{REF_PATTERN}', 2), '')"
        if type_name is None:
            return key
        return (
            f"(CASE WHEN regexp_extract({r}, '{REF_PATTERN}', 1) = "
            f"{sb.sql_str(type_name)} THEN {key} END)"
        )

    # -- functions ---------------------------------------------------------------------
    def call(self, n: fp.Call, scope: Scope) -> Expr:
        name, args = n.name, n.args
        if name == "ofType":
            return self.of_type(n, scope)
        if name == "getResourceKey":
            if (
                n.target is None
                or isinstance(n.target, fp.This)
                or (isinstance(n.target, fp.Var) and n.target.name in ("resource", "rootResource"))
            ):
                return Expr("val", self.key_sql, "string")
            t = self.single(self.expr(n.target, scope))
            return Expr("val", f"json_extract_string({t.sql}, '$.id')", "string")
        target = self.expr(n.target, scope) if n.target is not None else Expr("node", scope.focus)
        if name == "getReferenceKey":
            if self.lookup_refs:
                raise self.fail(
                    "with a references table, getReferenceKey() must be the last call of a "
                    "column path (it is resolved by a join)"
                )
            type_name = self.type_arg(n) if args else None
            x = self.names.fresh()
            key = self.reference_key(f"json_extract_string({x}, '$.reference')", type_name)
            inner = f"list_transform({self.coll(target)}, lambda {x}: to_json({key}))"
            y = self.names.fresh()
            return Expr("coll", f"list_filter({inner}, lambda {y}: {y} IS NOT NULL)", "string")
        if name in ("where", "select", "exists", "all", "repeat"):
            return self.lambda_fn(name, target, args, scope)
        if name in ("lowBoundary", "highBoundary"):
            s = self.single(target)
            v = s.sql if s.kind == "node" else f"to_json({s.sql})"
            prec = self.val(self.expr(args[0], scope), "integer") if args else None
            sql, typ = boundary_sql(self.names, v, target.type, name == "highBoundary", prec)
            return Expr("val", sql, typ)
        from cart_etl.extract.fhir.sof.functions import simple_function

        return simple_function(self, name, target, args, scope)

    def lambda_fn(self, name: str, target: Expr, args: tuple[fp.Node, ...], scope: Scope) -> Expr:
        if name == "exists" and not args:
            if target.kind == "coll":
                return Expr("val", f"(len({target.sql}) > 0)", "boolean")
            return Expr("val", f"({target.sql} IS NOT NULL)", "boolean")
        if len(args) != 1:
            raise self.fail(f"{name}() takes one argument")
        arg = args[0]
        if name in ("where", "exists"):
            filtered = self.filter(target, scope, lambda s: self.boolean(self.expr(arg, s)))
            if name == "exists":
                return Expr("val", f"(len({filtered.sql}) > 0)", "boolean")
            if target.kind == "node":
                return Expr("node", f"({filtered.sql})[1]", target.type)
            return filtered
        if name == "all":
            params, body = self.lam(
                self.coll(target), scope, lambda s: self.boolean(self.expr(arg, s))
            )
            return Expr(
                "val",
                f"(len(list_filter({self.coll(target)}, lambda {params}: NOT "
                f"coalesce({body}, false))) = 0)",
                "boolean",
            )
        if name == "select":
            params, body = self.lam(
                self.coll(target), scope, lambda s: self.coll(self.expr(arg, s))
            )
            return Expr(
                "coll", f"flatten(list_transform({self.coll(target)}, lambda {params}: {body}))"
            )
        raise self.fail(
            "repeat() as a FHIRPath function is not supported (use the select 'repeat')"
        )
