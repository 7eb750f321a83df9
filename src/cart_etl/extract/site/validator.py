"""The hand-written checks of a site mapping: key typos, columns, field expressions, items."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from cart_etl.errors import MappingError
from cart_etl.extract.contract import ENTITIES, ENTITY_COLUMNS
from cart_etl.extract.site.spec import (
    CODE_SUFFIX,
    PATIENT_KEY_FIELD,
    PRIVATE_FIELDS,
    SYSTEM_SUFFIX,
    UNIT_FIELD,
    ColumnRole,
    ColumnSpec,
    ItemSpec,
    Target,
    mapping_error,
    normalize_key,
)

__all__ = ["Ctx", "column_spec", "item_specs"]

COLUMN_TYPES: Final[frozenset[str]] = frozenset(
    {
        "string",
        "code",
        "date",
        "datetime",
        "number",
        "integer",
        "boolean",
        "by_item",
        "unit",
        "range",
        "dose_text",
        "oxygen_text",
    }
)
_COLUMN_KEYS: Final = frozenset(
    {
        "field",
        "type",
        "values",
        "unit",
        "unit_column",
        "lookup",
        "item",
        "note",
        "pattern",
        "special_values",
        "blank",
        "scale",
        "unmapped",
    }
)
_ITEM_KEYS: Final = frozenset({"target"})
_NEAR_MISS_CUTOFF: Final = 0.8
_FIELD_PATH: Final = re.compile(
    r"^(?P<entity>[a-z_][a-z0-9_]*)(?:\[\])?(?:\.(?P<name>[a-z0-9_]+))?$"
)


class Ctx:
    """Error reporting: every message starts with the YAML file and the key path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, problem: str, fix: str) -> MappingError:
        """A MappingError for key path ``where``."""
        return mapping_error(self.path, where, problem, fix)

    def check_keys(self, raw: Mapping[str, Any], known: Iterable[str], where: str) -> None:
        """Refuse keys that look like typos of known keys (``feild`` for ``field``)."""
        known = sorted(known)
        for key in raw:
            if not isinstance(key, str):
                raise self.fail(
                    f"{where}.{key}", f"key {key!r} is not text", "quote the key in the YAML."
                )
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=_NEAR_MISS_CUTOFF)
            if close:
                raise self.fail(
                    f"{where}.{key}",
                    f"unknown key {key!r}",
                    f"did you mean {close[0]!r}? Known keys: {', '.join(known)}.",
                )

    def mapping(self, value: Any, where: str, what: str) -> Mapping[str, Any]:
        """``value`` as a mapping or an error."""
        if not isinstance(value, Mapping):
            raise self.fail(where, f"expected {what} (a mapping), got {value!r}", f"write {what}.")
        return value

    def text(self, value: Any, where: str) -> str:
        """``value`` as non-empty text or an error."""
        if not isinstance(value, str) or value == "":
            raise self.fail(where, f"expected text, got {value!r}", "write a non-empty string.")
        return value

    def optional_text(self, value: Any, where: str) -> str | None:
        """``value`` as non-empty text, or None when absent."""
        return None if value is None else self.text(value, where)

    def choice(self, value: Any, allowed: Iterable[str], where: str) -> str:
        """``value`` if it is one of ``allowed``."""
        allowed = tuple(allowed)
        if value not in allowed:
            raise self.fail(
                where, f"{value!r} is not allowed", f"use one of: {', '.join(allowed)}."
            )
        return str(value)


def column_spec(ctx: Ctx, name: Any, raw: Any, where: str) -> ColumnSpec:
    """One column: its field expression parsed, its options kept."""
    if not isinstance(name, str) or not name:
        raise ctx.fail(where, f"column name {name!r} is not text", "quote the header in the YAML.")
    if raw is None or isinstance(raw, str):
        raw = {"field": raw}  # shorthand: `header: entity.name` or `header: null`
    spec = ctx.mapping(raw, where, "a column spec {field: ..., type: ...}")
    ctx.check_keys(spec, _COLUMN_KEYS, where)
    type_ = spec.get("type")
    if type_ is not None and type_ not in COLUMN_TYPES:
        raise ctx.fail(
            f"{where}.type",
            f"{type_!r} is not a column type",
            f"use one of: {', '.join(sorted(COLUMN_TYPES))}.",
        )
    unit = spec.get("unit")
    unit_column = spec.get("unit_column")
    if unit is not None and unit_column is not None:
        raise ctx.fail(
            where,
            "both 'unit' and 'unit_column' are given",
            "use unit_column when the export prints the unit, a fixed unit otherwise.",
        )
    raw_field = spec.get("field")
    role, targets = _parse_field(ctx, raw_field, f"{where}.field")
    item = spec.get("item")
    if item is not None and not isinstance(item, str):
        raise ctx.fail(f"{where}.item", f"{item!r} is not text", "quote the item code.")
    return ColumnSpec(
        name=name,
        field=raw_field,
        role=role,
        targets=targets,
        type=type_,
        item=item,
        unit=None if unit is None else str(unit),
        unit_column=ctx.optional_text(unit_column, f"{where}.unit_column"),
        lookup=ctx.optional_text(spec.get("lookup"), f"{where}.lookup"),
        options={k: v for k, v in spec.items() if k not in {"field", "type", "item", "lookup"}},
    )


def _parse_field(ctx: Ctx, raw: Any, where: str) -> tuple[ColumnRole, dict[str, Target]]:
    """Role and per-entity targets of a field expression (``a[].x | b[].y + b[].z``)."""
    if raw is None:
        return "ignored", {}
    if not isinstance(raw, str):
        raise ctx.fail(where, f"{raw!r} is not a field expression", "write e.g. 'vitals[].at'.")
    text = raw.strip()
    if text == PATIENT_KEY_FIELD:
        return "patient_key", {}
    if text in PRIVATE_FIELDS:
        return "private", {}
    if text == UNIT_FIELD:
        return "unit", {}
    targets: dict[str, Target] = {}
    for alternative in text.split("|"):
        first, *rest = (part.strip() for part in alternative.split("+"))
        target = _resolve_path(ctx, first, where, allow_bare=True)
        if target.entity in targets:
            raise ctx.fail(
                where,
                f"entity {target.entity!r} appears twice in {raw!r}",
                "give each entity one destination per column.",
            )
        also = tuple(_path_text(_resolve_path(ctx, p, where), p) for p in rest)
        targets[target.entity] = Target(
            target.entity, target.column, target.system_column, also_encodes=also
        )
    return "value", targets


def _path_text(target: Target, text: str) -> str:
    """The canonical column a '+' path names (its text when it only routes)."""
    return target.column or text


def _resolve_path(ctx: Ctx, path: str, where: str, *, allow_bare: bool = False) -> Target:
    """``entity[].name`` -> Target; coded names fill ``<name>_code`` and ``<name>_system``."""
    match = _FIELD_PATH.match(path)
    if match is None:
        raise ctx.fail(
            where, f"{path!r} is not a field path", "write 'entity.name' or 'entity[].name'."
        )
    entity, name = match["entity"], match["name"]
    if entity not in ENTITY_COLUMNS:
        raise ctx.fail(where, f"{entity!r} is not an entity", f"use one of: {', '.join(ENTITIES)}.")
    columns = ENTITY_COLUMNS[entity]
    if name is None:
        if not allow_bare:
            raise ctx.fail(where, f"{path!r} names no column", f"use {entity}[].<column>.")
        return Target(entity, None)
    if name in columns:
        return Target(entity, name)
    if name + CODE_SUFFIX in columns:
        return Target(entity, name + CODE_SUFFIX, name + SYSTEM_SUFFIX)
    coded = [c.removesuffix(CODE_SUFFIX) for c in columns if c.endswith(CODE_SUFFIX)]
    raise ctx.fail(
        where,
        f"{name!r} is not a column of {entity}",
        f"use one of: {', '.join([*columns, *coded])}.",
    )


def item_specs(
    ctx: Ctx,
    raw: Any,
    where: str,
    columns: Mapping[str, ColumnSpec],
    item_column: str | None,
) -> dict[str, ItemSpec]:
    """The item table of a long/wide spec, with each entry's target entity."""
    table = ctx.mapping(raw, where, "an item table {local code: {target: entity, ...}}")
    if not table:
        raise ctx.fail(where, "no items", "list the items the export charts.")
    routed = columns[item_column].targets if item_column else {}
    default = next(iter(routed)) if len(routed) == 1 else None
    items: dict[str, ItemSpec] = {}
    seen: dict[str, str] = {}
    for code, entry in table.items():
        at = f"{where}.{code}"
        if not isinstance(code, str):
            raise ctx.fail(at, f"item code {code!r} is not text", "quote it in the YAML.")
        attrs = ctx.mapping(entry if entry is not None else {}, at, "{target: entity, ...}")
        ctx.check_keys(attrs, _ITEM_KEYS, at)
        target = attrs.get("target", default)
        if target is None:
            choices = ", ".join(routed or ENTITIES)
            raise ctx.fail(
                f"{at}.target", "missing", f"name the entity it feeds: one of {choices}."
            )
        if target not in ENTITY_COLUMNS:
            raise ctx.fail(
                f"{at}.target",
                f"{target!r} is not an entity",
                f"use one of: {', '.join(ENTITIES)}.",
            )
        if item_column is not None and routed and target not in routed:
            raise ctx.fail(
                f"{at}.target",
                f"{target!r} is not routed by column {item_column!r} "
                f"(field {columns[item_column].field!r})",
                f"use one of: {', '.join(routed)}, or add '{target}' to that field.",
            )
        key = normalize_key(code)
        if key in seen:
            raise ctx.fail(
                at,
                f"{code!r} and {seen[key]!r} are the same item after NFKC + strip",
                "keep one of them.",
            )
        seen[key] = code
        rest = {k: v for k, v in attrs.items() if k != "target"}
        items[code] = ItemSpec(code=code, key=key, target=str(target), attributes=rest)
    return items
