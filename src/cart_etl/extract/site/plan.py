"""Extraction plans: for each file spec, the records it yields and what fills their columns."""

from __future__ import annotations

from pathlib import Path

from cart_etl.contract import ENTITY_COLUMNS
from cart_etl.extract.site.spec import (
    CODE_SUFFIX,
    DEFAULT_ITEM_TABLE,
    SYSTEM_SUFFIX,
    Assign,
    ColumnSpec,
    FileSpec,
    ItemSpec,
    Output,
    local_system,
    mapping_error,
    unit_column_of,
)

__all__ = ["plan_outputs"]


def plan_outputs(path: Path, site: str, spec: FileSpec) -> tuple[Output, ...]:
    """The outputs of a spec: what each entity record copies from which column.

    Raises:
        MappingError: the columns and items of the spec do not make a consistent plan
            (``path`` is the mapping file named in the message).
    """
    private_items = [c for c in spec.columns.values() if c.role == "private" and c.item]
    if private_items:
        raise mapping_error(
            path,
            f"{spec.where}.columns.{private_items[0].name}",
            "a private column cannot chart an item",
            "remove 'item' or the private field.",
        )
    planners = {"flat": _plan_flat, "long": _plan_long, "wide": _plan_wide}
    return planners[spec.layout](path, site, spec)


def _value_assigns(site: str, spec: FileSpec, col: ColumnSpec, entity: str) -> list[Assign]:
    """Assignments copying ``col`` into ``entity`` (plus the system of a coded field)."""
    target = col.targets.get(entity)
    if target is None or target.column is None:
        return []
    out = [Assign(target.column, source=col.name)]
    if target.system_column is not None:
        out.append(Assign(target.system_column, literal=local_system(site, spec, col.name)))
    return out


def _unit_assigns(spec: FileSpec, entity: str) -> list[Assign]:
    """Unit columns (field ``unit``) copied into the entity's unit column."""
    dest = unit_column_of(entity)
    units = [c for c in spec.columns.values() if c.role == "unit"]
    return [Assign(dest, source=c.name) for c in units] if dest else []


def _check_unique(path: Path, spec: FileSpec, output: Output) -> Output:
    """Refuse two sources for one canonical column of an output."""
    seen: dict[str, Assign] = {}
    for assign in output.assigns:
        if assign.column in seen:
            first = seen[assign.column].source or "a constant"
            raise mapping_error(
                path,
                f"{spec.where}.columns",
                f"{output.entity}.{assign.column} is filled by both {first!r} and "
                f"{assign.source or 'a constant'!r}"
                + (f" (item {output.item!r})" if output.item else ""),
                "map only one column to each canonical field.",
            )
        seen[assign.column] = assign
    return output


def _refuse_item_columns(path: Path, spec: FileSpec) -> None:
    """``item:`` belongs to wide layouts only."""
    for col in spec.columns.values():
        if col.item is not None:
            raise mapping_error(
                path,
                f"{spec.where}.columns.{col.name}.item",
                "'item' is only used by layout: wide",
                "remove it or set layout: wide.",
            )


def _refuse_bare_entities(path: Path, spec: FileSpec, skip: str | None = None) -> None:
    """A bare entity (no column) only routes rows, on the item column of a long layout."""
    for col in spec.columns.values():
        bare = [t.entity for t in col.targets.values() if t.column is None]
        if bare and col.name != skip:
            raise mapping_error(
                path,
                f"{spec.where}.columns.{col.name}.field",
                f"{bare[0]!r} names no column",
                "bare entities only route rows of layout: long item columns.",
            )


def _plan_flat(path: Path, site: str, spec: FileSpec) -> tuple[Output, ...]:
    """One record per row for every entity a column maps to."""
    _refuse_item_columns(path, spec)
    _refuse_bare_entities(path, spec)
    entities = dict.fromkeys(e for c in spec.columns.values() for e in c.targets)
    outputs = []
    for entity in entities:
        assigns = [a for c in spec.columns.values() for a in _value_assigns(site, spec, c, entity)]
        assigns += _unit_assigns(spec, entity)
        outputs.append(_check_unique(path, spec, Output(entity, tuple(assigns))))
    return tuple(outputs)


def _plan_long(path: Path, site: str, spec: FileSpec) -> tuple[Output, ...]:
    """One output per item target; rows are routed by the item column."""
    assert spec.value_column is not None  # checked when the mapping is parsed
    _refuse_item_columns(path, spec)
    _refuse_bare_entities(path, spec, skip=spec.item_column)
    value = spec.columns[spec.value_column]
    outputs = []
    for entity in dict.fromkeys(item.target for item in spec.items.values()):
        if entity not in value.targets or value.targets[entity].column is None:
            code = next(i.code for i in spec.items.values() if i.target == entity)
            raise mapping_error(
                path,
                f"{spec.where}.{spec.item_table}.{code}.target",
                f"{entity!r} has no destination in {spec.where}.columns.{value.name}.field "
                f"({value.field!r})",
                f"add '{entity}[].<column>' to that field or change the target.",
            )
        assigns = [a for c in spec.columns.values() for a in _value_assigns(site, spec, c, entity)]
        assigns += _unit_assigns(spec, entity)
        outputs.append(_check_unique(path, spec, Output(entity, tuple(assigns))))
    return tuple(outputs)


def _plan_wide(path: Path, site: str, spec: FileSpec) -> tuple[Output, ...]:
    """One output per item: shared columns plus the item's own value and unit columns."""
    _refuse_bare_entities(path, spec)
    by_item: dict[str, list[ColumnSpec]] = {}
    for col in spec.columns.values():
        if col.item is None:
            _check_shared_column(path, spec, col)
            continue
        if col.item not in spec.items:
            raise mapping_error(
                path,
                f"{spec.where}.columns.{col.name}.item",
                f"{col.item!r} is not in {spec.where}.{DEFAULT_ITEM_TABLE}",
                f"add it there with its target, or use one of: {', '.join(spec.items)}.",
            )
        by_item.setdefault(col.item, []).append(col)
    outputs = []
    for item in spec.items.values():
        cols = by_item.get(item.code)
        if not cols:
            raise mapping_error(
                path,
                f"{spec.where}.{DEFAULT_ITEM_TABLE}.{item.code}",
                "no column charts this item",
                f"add 'item: {item.code}' to its column or remove the entry.",
            )
        outputs.append(_check_unique(path, spec, _wide_output(path, site, spec, item, cols)))
    return tuple(outputs)


def _check_shared_column(path: Path, spec: FileSpec, col: ColumnSpec) -> None:
    """A column without ``item:`` feeds every item of its entities (e.g. the charting time)."""
    where = f"{spec.where}.columns.{col.name}"
    targets = {item.target for item in spec.items.values()}
    unused = [entity for entity in col.targets if entity not in targets]
    if unused:
        raise mapping_error(
            path,
            f"{where}.field",
            f"no item of {spec.where}.{DEFAULT_ITEM_TABLE} feeds {unused[0]!r}",
            f"map the column into one of: {', '.join(sorted(targets))}.",
        )
    referenced = {c.unit_column for c in spec.columns.values()}
    if col.role == "unit" and col.name not in referenced:
        raise mapping_error(
            path,
            f"{where}.field",
            "a wide row has no single unit",
            f"reference it from its item column with unit_column: {col.name}.",
        )


def _wide_output(
    path: Path, site: str, spec: FileSpec, item: ItemSpec, cols: list[ColumnSpec]
) -> Output:
    """The record one item of a wide row produces."""
    entity = item.target
    shared = [c for c in spec.columns.values() if c.item is None]
    assigns = [a for c in shared for a in _value_assigns(site, spec, c, entity)]
    for col in cols:
        assigns += _wide_value(path, site, spec, col, entity)
        assigns += _wide_unit(path, spec, col, entity)
    filled = {a.column for a in assigns}
    columns = ENTITY_COLUMNS[entity]
    code_column = next((c for c in columns if c.endswith(CODE_SUFFIX)), None)
    if code_column is not None and code_column not in filled:
        # The item key is the code; its system names the first column charting the item.
        system = code_column.removesuffix(CODE_SUFFIX) + SYSTEM_SUFFIX
        assigns.append(Assign(code_column, literal=item.code))
        assigns.append(Assign(system, literal=local_system(site, spec, cols[0].name)))
    return Output(entity, tuple(assigns), item=item.code, present=tuple(c.name for c in cols))


def _wide_value(
    path: Path, site: str, spec: FileSpec, col: ColumnSpec, entity: str
) -> list[Assign]:
    """Where an item column's cell goes: its field, else the entity's ``value`` column."""
    where = f"{spec.where}.columns.{col.name}.field"
    if col.targets and entity not in col.targets:
        raise mapping_error(
            path,
            where,
            f"item {col.item!r} feeds {entity!r} but the field names {', '.join(col.targets)}",
            f"map the column into {entity}.",
        )
    if col.targets:
        return _value_assigns(site, spec, col, entity)
    if "value" not in ENTITY_COLUMNS[entity]:
        raise mapping_error(
            path,
            where,
            f"missing ({entity} has no 'value' column)",
            f"name the destination, e.g. '{entity}[].{ENTITY_COLUMNS[entity][0]}'.",
        )
    return [Assign("value", source=col.name)]


def _wide_unit(path: Path, spec: FileSpec, col: ColumnSpec, entity: str) -> list[Assign]:
    """The unit of an item column: printed in ``unit_column`` or fixed by ``unit``."""
    if col.unit is None and col.unit_column is None:
        return []
    dest = unit_column_of(entity)
    if dest is None:
        raise mapping_error(
            path,
            f"{spec.where}.columns.{col.name}",
            f"{entity} has no unit column",
            "remove the unit.",
        )
    if col.unit_column is not None:
        return [Assign(dest, source=col.unit_column)]
    # A fixed unit describes the column's values: no value, no unit.
    return [Assign(dest, literal=col.unit, when=col.name)]
