"""ViewDefinition -> one DuckDB ``SELECT`` (SQL on FHIR v2, ViewDefinition
"Processing Algorithm").

Each selection structure compiles to a DuckDB expression of type
``STRUCT(columns...)[]``: the partial rows of ``Process(S, N)`` for the focus node.  A
``column`` list is one row, nested ``select``s and the ``unionAll`` (concatenated
branches) are further parts, and the parts are combined by their Cartesian product
(``struct_concat`` in nested ``list_transform``).  ``forEach``/``forEachOrNull`` map the
body over the focus collection (``%rowIndex`` is the lambda index - 1), an empty
``forEachOrNull`` yields the row of nulls (``%rowIndex`` columns 0), and ``repeat`` is a
bounded breadth-first unrolling (:data:`REPEAT_MAX_DEPTH` levels, deeper data is a run-time
error) sorted back into depth-first pre-order by each node's path key.  The top level
unnests the rows of every matching resource, so DuckDB streams and parallelises over the
source table; no Python runs per row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cart_etl.extract.fhir.sof import fhirpath as fp
from cart_etl.extract.fhir.sof import sqlbits as sb
from cart_etl.extract.fhir.sof.errors import ViewDefinitionError
from cart_etl.extract.fhir.sof.expr import (
    Expr,
    ExprCompiler,
    Projection,
    Scope,
    SharedProjection,
)
from cart_etl.extract.fhir.sof.view import (
    ViewColumn,
    check_view,
    column_sql_type,
    constant_exprs,
    view_name,
)

REPEAT_MAX_DEPTH = 32


@dataclass(frozen=True)
class RefColumn:
    """A column ``<refs>.getReferenceKey([T])`` resolved through the references table."""

    name: str
    type_name: str | None


@dataclass(frozen=True)
class Rows:
    """Partial rows of a selection: ``STRUCT(...)[]`` SQL, or exactly one row given as its
    fields ``(column name, SQL)`` (built into SQL only where a list is needed)."""

    list_sql: str = ""
    fields: list[tuple[str, str]] | None = None

    def struct(self) -> str:
        assert self.fields is not None
        return f"struct_pack({', '.join(f'{sb.ident(n)} := {v}' for n, v in self.fields)})"

    @property
    def sql(self) -> str:
        return f"[{self.struct()}]" if self.fields is not None else self.list_sql


class _ViewCompiler:
    def __init__(
        self,
        view: Mapping[str, Any],
        *,
        key_column: bool,
        references: bool,
        reference_types: bool,
    ) -> None:
        self.view = view
        self.vname = view_name(view)
        self.view_cols = check_view(view, self.vname)
        self.types: dict[tuple[str, str], str] = {}
        self.names = sb.Names()
        self.resource = str(view["resource"])
        key_sql = "_src._key" if key_column else "json_extract_string(_src.resource, '$.id')"
        self.root = "_src.resource"
        self.references = references
        self.reference_types = reference_types
        self.ref_columns: list[RefColumn] = []
        self.fx = ExprCompiler(
            self.names,
            root=self.root,
            key_sql=key_sql,
            constants=constant_exprs(view, self.vname),
            resource=self.resource,
            where=f"view {self.vname!r}",
        )
        self.fx.lookup_refs = references

    def at(self, loc: str) -> str:
        return f"view {self.vname!r}: {loc}"

    # -- columns -----------------------------------------------------------------------
    def column(self, col: ViewColumn, scope: Scope) -> str:
        where = self.at(f"{col.loc} column {col.name!r}")
        tree = fp.parse(col.path) if self.references else None
        if isinstance(tree, fp.Call) and tree.name == "getReferenceKey" and tree.target is not None:
            self.types[col.loc, col.name] = "VARCHAR"
            return self.ref_column(col, tree, scope, where)
        e = self.fx.compile(col.path, scope, where)
        sql_type = col.sql_type or column_sql_type(col, e)
        self.types[col.loc, col.name] = sql_type
        return self.cast(e, sql_type, col, where)

    def typ(self, col: ViewColumn) -> str:
        return self.types[col.loc, col.name]

    def cast(self, e: Expr, sql_type: str, col: ViewColumn, where: str) -> str:
        if col.collection:
            base = sql_type[:-2]
            if e.kind == "val":
                return (
                    f"(CASE WHEN {e.sql} IS NULL THEN []::{sql_type} ELSE "
                    f"[CAST({e.sql} AS {base})] END)"
                )
            x = self.names.fresh()
            return (
                f"CAST(list_transform({self.fx.coll(e)}, lambda {x}: "
                f"{sb.convert(x, base)}) AS {sql_type})"
            )
        if e.kind == "val":
            return f"CAST({e.sql} AS {sql_type})"
        if e.kind == "node":
            return sb.convert(e.sql, sql_type)  # convert() evaluates its argument once
        msg = sb.error_sql(
            f"{where}: path {col.path!r} returned more than one value (set collection: true)"
        )
        body = f"(CASE WHEN len({{v}}) > 1 THEN {msg} ELSE {sb.convert('{v}[1]', sql_type)} END)"
        general = sb.bind(self.names, e.fast.general if e.fast else e.sql, body)
        if e.fast is None:
            return general
        fast = sb.convert(e.fast.value, sql_type)
        return f"(CASE WHEN {e.fast.scalar()} THEN {fast} ELSE {general} END)"

    def ref_column(self, col: ViewColumn, tree: fp.Call, scope: Scope, where: str) -> str:
        """Keep the raw reference string; the top level joins it to the references table."""
        if col.collection:
            raise ViewDefinitionError(
                f"{where}: getReferenceKey() with a references table cannot be a collection column"
            )
        type_name = self.fx.type_arg(tree) if tree.args else None
        assert tree.target is not None
        self.fx.where, self.fx.path = where, col.path
        target = self.fx.expr(tree.target, scope)
        x = self.names.fresh()
        items = target.fast.general if target.fast else self.fx.coll(target)
        raw = Expr("coll", f"list_transform({items}, lambda {x}: json_extract({x}, '$.reference'))")
        self.ref_columns.append(RefColumn(col.name, type_name))
        general = self.cast(raw, "VARCHAR", col, where)
        if target.fast is None or target.kind != "coll":
            return general
        # one non-array target whose reference is one non-array value: that value
        ref = self.fx.member(target, "reference").fast
        assert ref is not None
        return (
            f"(CASE WHEN {ref.scalar()} THEN {sb.convert(ref.value, 'VARCHAR')} ELSE {general} END)"
        )

    # -- selects -----------------------------------------------------------------------
    def select(
        self, sel: Mapping[str, Any], loc: str, scope: Scope
    ) -> tuple[Rows, list[ViewColumn]]:
        """Rows of one selection structure and its columns in order."""
        it = next((k for k in ("forEach", "forEachOrNull", "repeat") if k in sel), None)
        if it is None:
            return self.body(sel, loc, scope)
        where = self.at(f"{loc}.{it}")
        if it == "repeat":
            foci = self.repeat(sel["repeat"], scope, where)
        else:
            foci = self.fx.coll(self.fx.compile(sel[it], scope, where))
        x = self.names.fresh("n")
        # each item is parsed once: {'n': item, 'm': [its members used by the body]}
        focus = f"{x}.n"
        proj = Projection(lambda i: f"{x}.m[{i}]")
        self.fx.proj[focus] = proj
        inner_scope = Scope(focus=focus, row_index=f"CAST(_i{x} - 1 AS BIGINT)", top=False)
        rows, cols = self.body(sel, loc, inner_scope)
        del self.fx.proj[focus]
        if rows.fields is not None:  # one row per focus item: no flatten
            mapped = f"list_transform({{v}}, lambda {x}, _i{x}: {rows.struct()})"
        else:
            mapped = f"flatten(list_transform({{v}}, lambda {x}, _i{x}: {rows.sql}))"
        if proj.paths:
            y = self.names.fresh()
            foci = (
                f"list_transform({foci}, lambda {y}: {{'n': {y}, 'm': "
                f"json_extract({y}, {proj.json_paths()})}})"
            )
        else:
            mapped = re.sub(rf"\b{x}\.n\b", x, mapped)
        if it != "forEachOrNull":
            return Rows(mapped.replace("{v}", f"({foci})")), cols
        nulls = ", ".join(
            f"{sb.ident(c.name)} := "
            f"{'0' if c.path.strip() == '%rowIndex' else 'NULL'}::{self.typ(c)}"
            for c in cols
        )
        body = f"(CASE WHEN len({{v}}) = 0 THEN [struct_pack({nulls})] ELSE {mapped} END)"
        return Rows(sb.bind(self.names, foci, body)), cols

    def parts(
        self, sel: Mapping[str, Any], loc: str, scope: Scope
    ) -> tuple[list[Rows], list[ViewColumn]]:
        """The factors of ``Process(S, N)`` for one select: its columns (one row), each
        nested select and the unionAll; the select's rows are their Cartesian product."""
        parts: list[Rows] = []
        cols: list[ViewColumn] = []
        columns = [c for c in self.view_cols if c.loc == loc]
        if columns:
            fields = []
            for col in columns:
                fields.append((col.name, self.column(col, scope)))
                cols.append(col)
            parts.append(Rows(fields=fields))
        for i, child in enumerate(sel.get("select") or []):
            rows, ccols = self.select(child, f"{loc}.select[{i}]", scope)
            parts.append(rows)
            cols.extend(ccols)
        if sel.get("unionAll"):
            branches = [
                self.select(b, f"{loc}.unionAll[{i}]", scope) for i, b in enumerate(sel["unionAll"])
            ]
            first_cols = branches[0][1]
            sqls = [branches[0][0].sql]
            for branch_rows, bcols in branches[1:]:
                brows = branch_rows.sql
                if [self.typ(c) for c in bcols] != [self.typ(c) for c in first_cols]:
                    y = self.names.fresh()
                    casts = ", ".join(
                        f"{sb.ident(fc.name)} := CAST(struct_extract({y}, "
                        f"{sb.sql_str(bc.name)}) AS {self.typ(fc)})"
                        for fc, bc in zip(first_cols, bcols, strict=True)
                    )
                    brows = f"list_transform({brows}, lambda {y}: struct_pack({casts}))"
                sqls.append(brows)
            parts.append(
                branches[0][0] if len(sqls) == 1 else Rows(f"list_concat({', '.join(sqls)})")
            )
            cols.extend(first_cols)
        if not parts:
            raise ViewDefinitionError(self.at(f"{loc}: a select needs column, select or unionAll"))
        return parts, cols

    def body(self, sel: Mapping[str, Any], loc: str, scope: Scope) -> tuple[Rows, list[ViewColumn]]:
        parts, cols = self.parts(sel, loc, scope)
        return self.product(parts), cols

    def product(self, parts: list[Rows]) -> Rows:
        """Cartesian product of the parts; one-row parts next to each other merge into one
        row (the same struct as ``struct_concat`` of theirs)."""
        merged: list[Rows] = []
        for part in parts:
            if part.fields is not None and merged and merged[-1].fields is not None:
                merged[-1] = Rows(fields=[*(merged[-1].fields or []), *part.fields])
            else:
                merged.append(part)
        acc = merged[0].sql
        for part in merged[1:]:
            p, a, b = self.names.fresh("p"), self.names.fresh("a"), self.names.fresh("r")
            acc = (
                f"(list_transform([{{'l': {acc}, 'r': {part.sql}}}], lambda {p}: "
                f"flatten(list_transform({p}.l, "
                f"lambda {a}: list_transform({p}.r, lambda {b}: struct_concat({a}, {b}))))))[1]"
            )
        return merged[0] if len(merged) == 1 else Rows(acc)

    def repeat(self, paths: list[str], scope: Scope, where: str) -> str:
        """Foci of ``repeat``: all descendants along ``paths``, depth-first pre-order (a
        ``list_reduce`` of :data:`REPEAT_MAX_DEPTH` breadth-first levels, sorted by path key)."""

        def children(level: str) -> str:
            e, c = self.names.fresh("e"), self.names.fresh("c")
            per_path = []
            for j, path in enumerate(paths):
                sub = Scope(focus=f"{e}.n", row_index=scope.row_index, top=False)
                coll = self.fx.coll(self.fx.compile(path, sub, f"{where}[{j}]"))
                kids = f"list_filter({coll}, lambda {c}: json_type({c}) = 'OBJECT')"
                per_path.append(
                    f"list_transform({kids}, lambda {c}, _i{c}: {{'k': "
                    f"list_concat({e}.k, [{j}, _i{c}]), 'n': {c}}})"
                )
            joined = per_path[0] if len(per_path) == 1 else f"list_concat({', '.join(per_path)})"
            return f"flatten(list_transform({level}, lambda {e}: {joined}))"

        entry = "STRUCT(k BIGINT[], n JSON)"
        root = f"[{{'k': []::BIGINT[], 'n': {scope.focus}}}]::{entry}[]"
        st = self.names.fresh("st")
        level = (
            f"list_reduce(range({REPEAT_MAX_DEPTH}), lambda {st}, _d{st}: {{'f': "
            f"{children(st + '.f')}, 'a': list_concat({st}.a, {st}.f)}}, {{'f': "
            f"{children(root)}, 'a': []::{entry}[]}})"
        )
        deep = sb.error_sql(f"{where}: nesting deeper than {REPEAT_MAX_DEPTH} levels")
        body = f"(CASE WHEN len({{v}}.f) > 0 THEN {deep} ELSE {{v}}.a END)"
        s = self.names.fresh("s")
        return f"list_transform(list_sort({sb.bind(self.names, level, body)}), lambda {s}: {s}.n)"

    # -- view --------------------------------------------------------------------------
    def where_clause(self, scope: Scope) -> list[str]:
        out = []
        for i, w in enumerate(self.view.get("where") or []):
            loc = self.at(f"where[{i}]")
            e = self.fx.compile(w["path"], scope, loc)
            if e.kind == "val":
                if e.fam != "boolean":
                    raise ViewDefinitionError(f"{loc}: path {w['path']!r} is not Boolean")
                out.append(f"coalesce({e.sql}, false)")
                continue
            msg = sb.error_sql(f"{loc}: path {w['path']!r} does not evaluate to a Boolean")
            c = self.fx.coll(e)
            body = (
                f"(CASE WHEN len({{v}}) = 0 THEN false WHEN len({{v}}) > 1 OR "
                f"json_type({{v}}[1]) <> 'BOOLEAN' "
                f"THEN {msg} ELSE CAST({{v}}[1] AS BOOLEAN) END)"
            )
            out.append(sb.bind(self.names, c, body))
        return out

    def compile(
        self,
        source: str,
        references: str | None,
        *,
        shared: dict[tuple[str, ...], int] | None = None,
        grouped_refs: bool = False,
    ) -> str:
        """``SELECT`` of the view.  Innermost: the rows of the view's resource type and
        their root members (one ``json_extract`` with all paths, so each resource is parsed
        once); then the view ``where``; one-row parts of the top-level select become plain
        columns and the other parts are unnested; last, ``getReferenceKey`` columns are
        hash-joined to the references table.

        ``shared`` (pre-parsed source, see :func:`compile_preparsed`): ``source`` already
        holds only the view's resource type and ``_rp JSON[]``, the root member chains;
        the chains this view reads are added to ``shared`` (chain -> position in ``_rp``,
        shared by all views compiled with the same dict).  ``grouped_refs``: ``references`` is
        already one row per ``ref`` (``ref, key[, type]``, as the ``_refs`` CTE makes it)."""
        proj: Projection
        if shared is not None:
            proj = self.fx.proj[self.root] = SharedProjection(shared)
        else:
            proj = self.fx.proj[self.root] = Projection(lambda i: f"_src._rm{i}")
        scope = Scope(focus=self.root, row_index="CAST(0 AS BIGINT)", top=True)
        parts, cols = self.parts({"select": self.view["select"]}, "", scope)
        conds = self.where_clause(scope)
        del self.fx.proj[self.root]
        rtype = sb.sql_str(self.resource)
        if shared is not None:
            src = f"(SELECT * FROM {source})"
        elif proj.paths:
            unpack = ", ".join(f"_q._rp[{i}] AS _rm{i}" for i in range(1, len(proj.paths) + 1))
            src = (
                f"(SELECT _q.* EXCLUDE (_rp), {unpack} FROM (SELECT _s.*, json_extract("
                f"_s.resource, {proj.json_paths()}) AS _rp FROM {source} AS _s "
                f"WHERE _s.resource_type = {rtype}) AS _q)"
            )
        else:
            src = f"(SELECT * FROM {source} AS _s WHERE _s.resource_type = {rtype})"
        value: dict[str, str] = {}
        selects: list[str] = []
        multi: list[Rows] = []
        for part in parts:
            if part.fields is None:
                multi.append(part)
                continue
            for name, sql in part.fields:
                alias = f"_c{len(value) + 1}"
                selects.append(f"{sql} AS {alias}")
                value[name] = f"_v.{alias}"
        if multi:
            selects.append(f"{self.product(multi).sql} AS _mr")
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        inner = f"SELECT {', '.join(selects)} FROM {src} AS _src{where}"
        if multi:
            inner = f"SELECT *, unnest(_mr) AS _row FROM ({inner}) AS _u"
        joins = []
        outs = []
        parsed_refs = []
        refs = {r.name: r for r in self.ref_columns}
        for k, col in enumerate(cols):
            val = value.get(col.name) or f"struct_extract(_v._row, {sb.sql_str(col.name)})"
            ref = refs.get(col.name)
            if ref is None:
                outs.append(f"{val} AS {sb.ident(col.name)}")
                continue
            alias = f"_ref{k}"
            refs_rel = references if grouped_refs else "_refs"
            joins.append(f"LEFT JOIN {refs_rel} AS {alias} ON {alias}.ref = {val}")
            ok = f"{alias}.key IS NOT NULL"
            if ref.type_name is not None and self.reference_types:
                ok += f" AND ({alias}.type IS NULL OR {alias}.type = {sb.sql_str(ref.type_name)})"
            # the literal reference parsed once (one regex run for type and id)
            parsed_refs.append(f"{self.fx.reference_parts(val.replace('_v.', '_w.'))} AS _rk{k}")
            key = f"nullif(_v._rk{k}.i, '')"
            if ref.type_name is not None:
                key = f"(CASE WHEN _v._rk{k}.t = {sb.sql_str(ref.type_name)} THEN {key} END)"
            outs.append(f"(CASE WHEN {ok} THEN {alias}.key ELSE {key} END) AS {sb.ident(col.name)}")
        if parsed_refs:
            inner = f"SELECT *, {', '.join(parsed_refs)} FROM ({inner}) AS _w"
        sql = f"SELECT {', '.join(outs)} FROM ({inner}) AS _v"
        if joins and grouped_refs:
            sql = sql + " " + " ".join(joins)
        elif joins:
            typ = ", arg_min(type, key) AS type" if self.reference_types else ""
            refs_cte = (
                f"WITH _refs AS (SELECT ref, min(key) AS key{typ} FROM {references} GROUP BY ref) "
            )
            sql = refs_cte + sql + " " + " ".join(joins)
        return sql


def compile_view(
    view: Mapping[str, Any],
    *,
    source: str = "resources",
    references: str | None = None,
    key_column: bool = False,
    reference_types: bool = False,
) -> str:
    """ViewDefinition (dict, as parsed from JSON) -> one DuckDB SELECT statement.

    ``source`` is a table/view with ``resource_type VARCHAR`` and ``resource JSON``;
    ``key_column=True`` makes ``getResourceKey()`` return its ``_key VARCHAR`` column
    (default: ``resource.id``; :func:`run_view` detects the column).  ``references`` names
    a table ``(ref VARCHAR, key VARCHAR[, type VARCHAR])`` consulted by a column whose path
    ends in ``getReferenceKey([T])``; ``reference_types=True`` says it has ``type``.
    """
    return _compiler(view, references, key_column, reference_types).compile(source, references)


def grouped_refs_sql(references: str, reference_types: bool) -> str:
    """The references table as one row per ``ref`` (the ``_refs`` CTE of a view)."""
    typ = ", arg_min(type, key) AS type" if reference_types else ""
    return f"SELECT ref, min(key) AS key{typ} FROM {references} GROUP BY ref"


def compile_preparsed(
    view: Mapping[str, Any],
    *,
    source: str,
    shared: dict[tuple[str, ...], int],
    references: str | None = None,
    key_column: bool = False,
    reference_types: bool = False,
    grouped_refs: bool = False,
) -> str:
    """Like :func:`compile_view`, against a pre-parsed ``source``: only resources of the
    view's type, with ``_key`` (when ``key_column``), ``resource`` (when the SQL reads
    ``_src.resource``) and ``_rp JSON[]``, the root member chains the views read, collected
    in ``shared`` (chain -> position; the caller builds the source with
    ``json_extract(resource, [chain paths]) AS _rp`` after compiling all views).
    ``grouped_refs``: ``references`` is already grouped (:func:`grouped_refs_sql`)."""
    compiler = _compiler(view, references, key_column, reference_types)
    return compiler.compile(source, references, shared=shared, grouped_refs=grouped_refs)


def _compiler(
    view: Mapping[str, Any], references: str | None, key_column: bool, reference_types: bool
) -> _ViewCompiler:
    """The compiler of one view (both entry points check the view is an object first)."""
    if not isinstance(view, Mapping):
        raise ViewDefinitionError(
            f"a ViewDefinition must be a JSON object, not {type(view).__name__}"
        )
    return _ViewCompiler(
        view,
        key_column=key_column,
        references=references is not None,
        reference_types=reference_types,
    )


__all__ = ["REPEAT_MAX_DEPTH", "compile_preparsed", "compile_view", "grouped_refs_sql"]
